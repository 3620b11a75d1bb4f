"""Rebuild the Medilink marts with one `dbt build`, shown as one Airflow task per model, whenever new raw data is published.

Scheduled on the `medilink_raw` asset, which `medilink_ingest` emits after a run that loaded at least one
file; it can also be triggered by hand ("Trigger DAG w/ config"), with `full_refresh` to rebuild the
incremental marts from scratch.

`dbt_build` runs `dbt build` of the Medilink family's dbt folders once (`marts.dbt_paths` in
elt/families/medilink.yml, with the shared models/staging/ops: `--select path:...`; the bed models are
nhs_beds_ingest's, the claims staging view `elt build`'s until the claims family lands). The
`dbt` task group has a task per model, `<model>.run`, then `<model>.test` (its tests); a test on several models
(relationships, reconciliations) is a task of its own, and `dbt_source_tests` holds the tests on sources. Those
tasks follow the build: each ends as dbt finishes its nodes, without a worker process of its own. A failing test
fails its task; the models downstream of it end skipped (dbt did not build them, they keep their last published
rows) and `all_dbt_tasks_succeeded` fails the run. A test is never retried, a model only when dbt lost its
connection; clearing a model's task re-runs that model alone, after its upstream tasks. If `dbt_build` fails or
dies, each task runs its own model instead, in dbt's order. Decision 0015 has the why and the failure cases.

The tasks are rendered from `dbt/target/manifest.json`, which `elt parse` writes (`./start.sh`, the image build
and the tests run it). If it is missing or older than a file of the dbt project, the DAG renders the single
`build_marts` task (the same `dbt build`) instead and logs why; run `elt parse` to get the per-model tasks back.
"""

import logging

import pendulum
from airflow.sdk import Param, dag, task

from elt.orchestration import (
    DEFAULT_ARGS,
    dbt_tasks,
    family,
    medilink_raw_ref,
    on_run_finished,
    on_task_failure,
)

log = logging.getLogger(__name__)
MEDILINK = family("medilink", with_contracts=False)  # its dbt paths; parsed often: its file only


@dag(
    dag_id="medilink_marts",
    schedule=[medilink_raw_ref()],
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

    settings = Settings()  # only where the dbt project is and its target: no connection is made here
    problem = manifest_problem(settings)
    if problem is None:
        dbt_tasks(settings, MEDILINK)
        return

    log.warning("medilink_marts renders one dbt build task, not one task per model: %s (run `elt parse`)", problem)

    @task(doc_md=f"`dbt build` in one task, because {problem}. Run `elt parse` to get one task per model.")
    def build_marts(**context) -> None:
        from elt.orchestration import build_models, full_refresh_requested

        build_models(MEDILINK.dbt_select(), full_refresh=full_refresh_requested(context))

    build_marts()


medilink_marts()
