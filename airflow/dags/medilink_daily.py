"""Load the day's Medilink clinic drops into raw tables, then rebuild the marts with dbt.

Runs at 02:00 UTC every day and on demand ("Trigger DAG w/ config" in the UI):

* `drop_type` - only this drop type (e.g. `medilink_triage_visits`); empty means all four.
* `key` - only this object key under `medical_records/input/`.
* `dry_run` - validate and count rows, then roll back; nothing is loaded or moved, dbt does not run.
* `full_refresh` - rebuild incremental marts from scratch.

Re-running a day is safe: a file already in the ledger is not loaded again, the same bytes under a new key
are recorded as a duplicate, and new bytes for the same day supersede the earlier file (history is kept).
Bad files are moved to `medical_records/quarantine/` with a `.error.json` saying why; see `elt files`.
"""

import pendulum
from airflow.sdk import Asset, Param, dag, task

MEDILINK_RAW = Asset(name="medilink_raw", uri="warehouse://raw/medilink")


@dag(
    dag_id="medilink_daily",
    schedule="0 2 * * *",
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={
        "owner": "data-engineering",
        "retries": 2,
        "retry_delay": pendulum.duration(seconds=30),
        "retry_exponential_backoff": True,
    },
    params={
        "drop_type": Param("", type="string", description="Only this drop type; empty for all Medilink drops."),
        "key": Param("", type="string", description="Only this object key; empty for every waiting file."),
        "dry_run": Param(False, type="boolean", description="Validate and count only; load and move nothing."),
        "full_refresh": Param(False, type="boolean", description="Rebuild incremental marts from scratch."),
    },
    doc_md=__doc__,
    tags=["medilink", "ingest", "dbt"],
)
def medilink_daily():
    @task
    def discover(params=None) -> list[str]:
        from elt.pipeline import discover_new_files, prepare

        prepare()
        if params["key"]:
            return [params["key"]]
        return discover_new_files("medilink", drop_type=params["drop_type"] or None)

    @task(outlets=[MEDILINK_RAW])
    def load(key: str, params=None) -> dict:
        from elt.pipeline import ingest_file

        return ingest_file(key, dry_run=params["dry_run"]).as_dict()

    @task(trigger_rule="none_failed")
    def build_marts(outcomes: list[dict], params=None) -> dict:
        from elt.transform import build

        outcomes = list(outcomes or [])
        summary = {"files": len(outcomes)}
        for outcome in outcomes:
            summary[outcome["status"]] = summary.get(outcome["status"], 0) + 1
        if params["dry_run"]:
            return {**summary, "dbt": "skipped (dry run)"}
        build(full_refresh=params["full_refresh"])
        return {**summary, "dbt": "built"}

    build_marts(load.expand(key=discover()))


medilink_daily()
