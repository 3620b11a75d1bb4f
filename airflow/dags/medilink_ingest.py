"""Load the day's Medilink clinic drops from S3 into raw tables, one mapped task per new file.

Runs every day at the time its family declares (`ingest.daily_at` in elt/families/medilink.yml: 02:00 UTC) and on
demand ("Trigger DAG w/ config" in the UI):

* `drop_type` - only this drop type (e.g. `medilink_triage_visits`); empty means all four.
* `key` - only this object key under `medical_records/input/`.
* `dry_run` - validate and count rows, then roll back; nothing is loaded or moved, the marts are not rebuilt.
* `full_refresh` - rebuild the incremental marts from scratch afterwards (even when no file is new).

`discover` lists the waiting files, `load` runs once per file (ledger, COPY, rejects, then the archive move
after the commit), and `publish` emits the `medilink_raw` asset when at least one file was loaded:
`medilink_marts` is scheduled on that asset, so the marts rebuild when, and only when, new raw data is
published. A run that loads nothing (every file already in the ledger) triggers no rebuild.

One file's failed load never holds back the others: `publish` runs once every load has finished, failed
ones included, and publishes what loaded; `all_loads_succeeded` then ends `upstream_failed`, so the run
is marked failed and the failed load shows in red. A load that failed on an error the loader did not
expect has its file quarantined with the reason (`load_error`), so it does not fail again every night.

Re-running a day is safe: a file already in the ledger is not loaded again, the same bytes under a new key
are recorded as a duplicate, and new bytes for the same day supersede the earlier file (history is kept).
Bad files are moved to `medical_records/quarantine/` with a `.error.json` saying why; see `elt files`.
A load is retried with backoff only when it failed on a connection or a timeout; each run's state and
failed tasks are written to `ops.pipeline_runs`.
"""

import logging

import pendulum
from airflow.sdk import Param, dag, task

from elt.orchestration import (
    AFTER_LOADS,
    DEFAULT_ARGS,
    fail_the_run_if_a_load_failed,
    family,
    medilink_raw_asset,
    on_run_finished,
    on_task_failure,
)

log = logging.getLogger(__name__)
MEDILINK_RAW = medilink_raw_asset()
MEDILINK = family("medilink")


@dag(
    dag_id=MEDILINK.ingest_dag_id,
    schedule=MEDILINK.cron,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={**DEFAULT_ARGS, "on_failure_callback": on_task_failure},
    on_success_callback=on_run_finished,
    on_failure_callback=on_run_finished,
    params={
        "drop_type": Param("", type="string", description="Only this drop type; empty for all Medilink drops."),
        "key": Param("", type="string", description="Only this object key; empty for every waiting file."),
        "dry_run": Param(False, type="boolean", description="Validate and count only; load and move nothing."),
        "full_refresh": Param(False, type="boolean", description="Rebuild incremental marts from scratch."),
    },
    doc_md=__doc__,
    tags=["medilink", "ingest"],
)
def medilink_ingest():
    @task
    def discover(params=None) -> list[str]:
        from elt.pipeline import discover_new_files, prepare

        prepare()
        if params["key"]:
            return [params["key"]]
        return discover_new_files(drop_types=MEDILINK.drop_types, drop_type=params["drop_type"] or None)

    @task
    def load(key: str, params=None) -> dict:
        from elt.orchestration import load_file

        return load_file(key, dry_run=params["dry_run"])

    @task(outlets=[MEDILINK_RAW], trigger_rule=AFTER_LOADS)
    def publish(outcomes: list[dict], **context) -> dict:
        """Logs what the loads did and emits `medilink_raw` when there is something new for dbt."""
        from airflow.sdk.exceptions import AirflowSkipException

        from elt.orchestration import record_loads, summarise_loads

        params = context["params"]
        summary = summarise_loads(list(outcomes or []))
        record_loads(context, summary)
        if params["dry_run"]:
            raise AirflowSkipException(f"dry run, nothing published: {summary}")
        if not summary.get("loaded") and not params["full_refresh"]:
            raise AirflowSkipException(f"no new file loaded, the marts stay as they are: {summary}")
        context["outlet_events"][MEDILINK_RAW].extra = {"files_loaded": summary.get("loaded", 0),
                                                        "full_refresh": bool(params["full_refresh"])}
        log.info("published medilink_raw: %s; medilink_marts rebuilds the marts", summary)
        return summary

    loads = load.expand(key=discover())
    publish(loads)
    fail_the_run_if_a_load_failed(loads)


medilink_ingest()
