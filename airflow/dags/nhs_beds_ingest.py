"""Load NHS England KH03 "Beds Open Overnight" workbooks from S3 and rebuild the bed-occupancy marts.

Runs every day at the time its family declares (`ingest.daily_at` in elt/families/nhs_beds.yml: 02:30 UTC; a
workbook dropped under `nhs/kh03/` is picked up the next night) and on
demand: `POST /api/v1/drops` and `/drops/from-url` trigger it for the file they stored, and "Trigger DAG
w/ config" in the UI takes:

* `key` - only this object key under `nhs/kh03/`; empty means every waiting workbook.
* `dry_run` - read and check the workbooks and count rows, then roll back; nothing is loaded or moved.
* `rebuild_marts` - rebuild the bed marts even when no workbook is new.

`discover` lists the waiting workbooks, `load` runs once per workbook (the KH03 reader checks the whole
workbook: periods, totals, the England row, % occupied; a workbook that fails is quarantined under
`nhs/kh03/quarantine/` with a `.error.json` saying why), and `build_marts` runs `dbt build` of the family's dbt
folders (`marts.dbt_paths` in elt/families/nhs_beds.yml: staging, core and analytics models of the beds and
their tests, with the shared models/staging/ops) when a workbook loaded. So one run of this DAG takes a workbook
all the way to the API: its state is what `GET /api/v1/runs/<run_id>` reports. A revised workbook for a quarter
supersedes the earlier one (history kept in raw and the ledger). The medilink DAGs never build these models;
the ledger's view in models/staging/ops is every family's.

One workbook's failed load never holds back the others: `build_marts` runs once every load has finished
and builds what loaded; `all_loads_succeeded` then ends `upstream_failed`, so the run is marked failed.
"""

import logging

import pendulum
from airflow.sdk import Param, dag, task

from elt.orchestration import (
    AFTER_LOADS,
    DEFAULT_ARGS,
    fail_the_run_if_a_load_failed,
    family,
    on_run_finished,
    on_task_failure,
)

log = logging.getLogger(__name__)
NHS_BEDS = family("nhs_beds")


@dag(
    dag_id=NHS_BEDS.ingest_dag_id,
    schedule=NHS_BEDS.cron,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={**DEFAULT_ARGS, "on_failure_callback": on_task_failure},
    on_success_callback=on_run_finished,
    on_failure_callback=on_run_finished,
    params={
        "key": Param("", type="string", description="Only this object key; empty for every waiting workbook."),
        "dry_run": Param(False, type="boolean", description="Check and count only; load and move nothing."),
        "rebuild_marts": Param(False, type="boolean", description="Rebuild the bed marts even if nothing loaded."),
    },
    doc_md=__doc__,
    tags=["nhs", "ingest", "dbt"],
)
def nhs_beds_ingest():
    @task
    def discover(params=None) -> list[str]:
        from elt.pipeline import discover_new_files, prepare

        prepare()
        if params["key"]:
            return [params["key"]]
        return discover_new_files(drop_types=NHS_BEDS.drop_types)

    @task
    def load(key: str, params=None) -> dict:
        from elt.orchestration import load_file

        return load_file(key, dry_run=params["dry_run"])

    @task(trigger_rule=AFTER_LOADS)
    def build_marts(outcomes: list[dict], **context) -> dict:
        """`dbt build` of the bed models when a workbook loaded (or `rebuild_marts`)."""
        from airflow.sdk.exceptions import AirflowSkipException

        from elt.orchestration import build_models, record_loads, summarise_loads

        params = context["params"]
        summary = summarise_loads(list(outcomes or []))
        record_loads(context, summary)
        if params["dry_run"]:
            raise AirflowSkipException(f"dry run, nothing built: {summary}")
        if not summary.get("loaded") and not params["rebuild_marts"]:
            raise AirflowSkipException(f"no new workbook loaded, the bed marts stay as they are: {summary}")
        log.info("loads: %s; building %s", summary, " ".join(NHS_BEDS.dbt_select()))
        build_models(NHS_BEDS.dbt_select())
        return summary

    loads = load.expand(key=discover())
    build_marts(loads)
    fail_the_run_if_a_load_failed(loads)


nhs_beds_ingest()
