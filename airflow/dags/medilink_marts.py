"""Rebuild the Medilink marts with dbt, one Airflow task per model, whenever new raw data is published.

Scheduled on the `medilink_raw` asset, which `medilink_ingest` emits after a run that loaded at least one
file; it can also be triggered by hand ("Trigger DAG w/ config"), with `full_refresh` to rebuild the
incremental marts from scratch.

dbt runs as the `dbt` task group that astronomer-cosmos renders from `dbt/target/manifest.json`: per model
`<model>.run`, then `<model>.test` (its unit and data tests); a test on several models (relationships,
reconciliations) is a task of its own after all of them, and the tests on sources run first
(`dbt_source_tests`). A failing test stops only the models downstream of it, which keep their last
published rows; a test is never retried, and a model only when dbt lost its connection. A retry reruns one
model. `elt parse` writes the manifest (`./start.sh`, the image build and the tests run it). If it is
missing or older than a file of the dbt project, the DAG renders the single `build_marts` task
(`dbt build`) instead and logs why; run `elt parse` to get the per-model tasks back.
"""

import logging

import pendulum
from airflow.sdk import Param, dag, task

from elt.orchestration import DEFAULT_ARGS, dbt_tasks, medilink_raw_asset, on_run_finished, on_task_failure

log = logging.getLogger(__name__)


@dag(
    dag_id="medilink_marts",
    schedule=[medilink_raw_asset()],
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={**DEFAULT_ARGS, "on_failure_callback": on_task_failure},
    on_success_callback=on_run_finished,
    on_failure_callback=on_run_finished,
    params={
        "full_refresh": Param(False, type="boolean", description="Rebuild incremental marts from scratch."),
    },
    doc_md=__doc__,
    tags=["medilink", "dbt"],
)
def medilink_marts():
    from elt.config import Settings
    from elt.transform import manifest_problem

    @task
    def plan(**context) -> bool:
        """Full refresh or not: the form's choice, or the one passed on by medilink_ingest."""
        from elt.orchestration import full_refresh_requested

        full_refresh = full_refresh_requested(context)
        log.info("dbt: %s", "full refresh" if full_refresh else "incremental (new rows only)")
        return full_refresh

    planned = plan()
    settings = Settings()  # only where the dbt project is and its target: no connection is made here
    problem = manifest_problem(settings)
    if problem is None:
        dbt_tasks(settings, upstream=planned)
        return

    log.warning("medilink_marts renders one dbt build task, not one task per model: %s (run `elt parse`)", problem)

    @task(doc_md=f"`dbt build` in one task, because {problem}. Run `elt parse` to get one task per model.")
    def build_marts(full_refresh: bool) -> None:
        from elt.transform import build

        build(full_refresh=full_refresh)

    build_marts(planned)


medilink_marts()
