"""Load the day's Medilink clinic drops into raw tables, then rebuild the marts with dbt, one task per model.

Runs at 02:00 UTC every day and on demand ("Trigger DAG w/ config" in the UI):

* `drop_type` - only this drop type (e.g. `medilink_triage_visits`); empty means all four.
* `key` - only this object key under `medical_records/input/`.
* `dry_run` - validate and count rows, then roll back; nothing is loaded or moved, dbt does not run.
* `full_refresh` - rebuild incremental marts from scratch.

Re-running a day is safe: a file already in the ledger is not loaded again, the same bytes under a new key
are recorded as a duplicate, and new bytes for the same day supersede the earlier file (history is kept).
Bad files are moved to `medical_records/quarantine/` with a `.error.json` saying why; see `elt files`.

dbt runs as the `dbt` task group that astronomer-cosmos renders from `dbt/target/manifest.json`: per model
`<model>.run`, then `<model>.test` (its unit and data tests); a test on several models (relationships,
reconciliations) is a task of its own after all of them, and the tests on sources run first
(`dbt_source_tests`). A failing test stops only the models downstream of it; a retry reruns one model.
`elt parse` writes the manifest (`./start.sh`, the image build and the tests run it). If it is missing or
older than a file of the dbt project, the DAG renders the single `build_marts` task (`dbt build`) instead
and logs why; run `elt parse` to get the per-model tasks back.
"""

import logging

import pendulum
from airflow.sdk import Asset, Param, dag, task

log = logging.getLogger(__name__)

MEDILINK_RAW = Asset(name="medilink_raw", uri="warehouse://raw/medilink")


def _warehouse_connection(context, operator) -> None:
    """Cosmos interceptor, run in the task just before dbt starts: the DBT_PG_* variables that dbt/profiles.yml
    reads, from DATABASE_URL as `elt build` takes them. The DAG itself holds no connection details."""
    from airflow.sdk.log import mask_secret

    from elt.config import get_settings
    from elt.transform import dbt_connection_env

    env = dbt_connection_env(get_settings())
    if env["DBT_PG_PASSWORD"]:
        mask_secret(env["DBT_PG_PASSWORD"])
    operator.env = {**(operator.env or {}), **env}


def _dbt_tasks(settings, upstream) -> None:
    """`dbt_source_tests`, then the `dbt` task group (one run and one test task per model), after `upstream`."""
    from pathlib import Path

    from cosmos import DbtTaskGroup, ExecutionConfig, ProfileConfig, ProjectConfig, RenderConfig
    from cosmos import settings as cosmos_settings
    from cosmos.constants import InvocationMode, LoadMode, TestBehavior
    from cosmos.operators.local import DbtTestLocalOperator

    from elt.transform import dbt_executable, manifest_path

    project = Path(settings.dbt_project_dir)
    profile = ProfileConfig(profile_name="health_warehouse", target_name=settings.dbt_target,
                            profiles_yml_filepath=project / "profiles.yml")
    # dbt in the task's own process (dbtRunner), not a subprocess per command as `elt build` runs it: each task is
    # its own process anyway, and a subprocess adds ~2 s (dbt's imports) to every one of the dbt tasks.
    execution = ExecutionConfig(invocation_mode=InvocationMode.DBT_RUNNER, dbt_executable_path=dbt_executable())
    dbt_args = {"install_deps": False, "interceptors": [_warehouse_connection]}

    models = DbtTaskGroup(
        group_id="dbt",
        project_config=ProjectConfig(dbt_project_path=project, manifest_path=manifest_path(settings),
                                     install_dbt_deps=False),
        profile_config=profile,
        execution_config=execution,
        render_config=RenderConfig(
            load_method=LoadMode.DBT_MANIFEST,  # parsing the DAG reads a file; it never runs dbt
            test_behavior=TestBehavior.AFTER_EACH,
            # A test on several models in one model's test task would run before the other models exist.
            should_detach_multiple_parents_tests=True,
            emit_datasets=False,
        ),
        operator_args={**dbt_args, "full_refresh": "{{ params.full_refresh }}"},  # test tasks ignore full_refresh
    )
    # Cosmos renders no source nodes here: rendering them would add `dbt source freshness` tasks, which `dbt build`
    # does not run (and which fail after a weekend without drops). The tests on sources (ops.file_ledger's) get
    # one task, sharing the group's cache of dbt's partial parse.
    cache_dir = cosmos_settings.cache_dir / f"{models.dag.dag_id}__{models.group_id}"
    source_tests = DbtTestLocalOperator(
        task_id="dbt_source_tests", select="source:*", project_dir=str(project), profile_config=profile,
        invocation_mode=execution.invocation_mode, dbt_executable_path=execution.dbt_executable_path,
        cache_dir=cache_dir if cosmos_settings.enable_cache else None, emit_datasets=False, **dbt_args,
    )
    upstream >> source_tests >> models


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
    from elt.config import Settings
    from elt.transform import manifest_problem

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

    @task.short_circuit(trigger_rule="none_failed")
    def should_build_marts(outcomes: list[dict], params=None) -> bool:
        """Logs what the loads did; on a dry run, skips every dbt task after it."""
        outcomes = list(outcomes or [])
        summary = {"files": len(outcomes)}
        for outcome in outcomes:
            summary[outcome["status"]] = summary.get(outcome["status"], 0) + 1
        log.info("loads: %s; dbt: %s", summary, "skipped (dry run)" if params["dry_run"] else "runs")
        return not params["dry_run"]

    gate = should_build_marts(load.expand(key=discover()))

    settings = Settings()  # only where the dbt project is and its target: no connection is made here
    problem = manifest_problem(settings)
    if problem is None:
        _dbt_tasks(settings, upstream=gate)
        return

    log.warning("medilink_daily renders one dbt build task, not one task per model: %s (run `elt parse`)", problem)

    @task(doc_md=f"`dbt build` in one task, because {problem}. Run `elt parse` to get one task per model.")
    def build_marts(params=None) -> None:
        from elt.transform import build

        build(full_refresh=params["full_refresh"])

    gate >> build_marts()


medilink_daily()
