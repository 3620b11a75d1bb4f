"""What the Airflow DAGs share: the asset that links ingestion to dbt, retry policy, callbacks, the dbt task group.

The DAG files in airflow/dags/ stay short and declarative; everything they do at run time is here or in
elt.pipeline, so the CLI, the DAGs and the tests run the same code. Airflow and cosmos are imported inside
functions: `elt` itself runs without them.

Retry policy (docs/operations.md, "Failures and retries"):
* a load that failed on a connection or a timeout is retried with exponential backoff; any other load
  failure (a bug, a missing table) fails at once, because running it again gives the same answer;
* a dbt model is retried only when dbt's error reads as a lost or refused connection;
* a dbt test is never retried: it checks data, and the data will not change by itself.
Bad files never fail a task: they are quarantined and the run goes on (elt.pipeline).
"""

from __future__ import annotations

import logging
from datetime import datetime

import pendulum

from elt.runs import describe_failure, is_transient, is_transient_message, record_run, record_task_failure

log = logging.getLogger(__name__)

# New Medilink rows in raw tables. medilink_ingest emits it when a run loaded at least one file (or a full
# refresh was asked for); medilink_marts is scheduled on it.
MEDILINK_RAW_URI = "warehouse://raw/medilink"

DEFAULT_ARGS = {
    "owner": "data-engineering",
    "retries": 2,
    "retry_delay": pendulum.duration(seconds=30),
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": pendulum.duration(minutes=10),
}


def medilink_raw_asset():
    from airflow.sdk import Asset

    return Asset(name="medilink_raw", uri=MEDILINK_RAW_URI)


# --- Loads ---------------------------------------------------------------------------------------------------


def load_file(key: str, *, dry_run: bool, settings=None) -> dict:
    """elt.pipeline.ingest_file for one key. A failure that a retry cannot cure fails the task without retries.

    What reaches the task log and ops.pipeline_runs is the error's class and place (elt.runs.describe_failure),
    never its message or a chained traceback: an error raised while reading a file may quote the file.
    """
    from airflow.sdk.exceptions import AirflowFailException

    from elt.pipeline import ingest_file

    try:
        outcome = ingest_file(key, dry_run=dry_run, settings=settings)
    except Exception as exc:
        if is_transient(exc):
            log.warning("load of %s failed on a connection or timeout (%s); Airflow retries it with backoff", key,
                        describe_failure(exc))
            raise TransientLoadFailure(f"load of {key} failed: {describe_failure(exc)}") from None
        raise AirflowFailException(
            f"load of {key} failed and will not be retried (not a connection or timeout failure): "
            f"{describe_failure(exc)}. The file stays waiting; the reason is on its ledger row (`elt files`).") from None
    if outcome.status == "failed":  # quarantined after an error the loader did not expect: the run must show it
        raise AirflowFailException(f"{outcome.key}: {outcome.error}")
    return outcome.as_dict()


class TransientLoadFailure(Exception):
    """A load that lost its connection or timed out, retold without the original's message: Airflow retries it."""


# The trigger rule of the task after the mapped loads (publish, build_marts): it runs once every load has
# finished, failed ones included, so the files that loaded are published even when another file's load failed.
AFTER_LOADS = "all_done"


def fail_the_run_if_a_load_failed(loads) -> None:
    """A leaf task after the loads with the default trigger rule (all_success): when a load failed it ends
    `upstream_failed`, so the run is marked failed, although the task after the loads (AFTER_LOADS) published
    what did load."""
    from airflow.providers.standard.operators.empty import EmptyOperator

    loads >> EmptyOperator(task_id="all_loads_succeeded", doc_md=fail_the_run_if_a_load_failed.__doc__)


def build_models(select: str, *, settings=None) -> None:
    """`dbt build --select <select>` in one task. Retried only when dbt lost or was refused its connection: a
    failed test or a broken model gives the same answer again."""
    from airflow.sdk.exceptions import AirflowFailException

    from elt.transform import build

    try:
        build(select=select, settings=settings)
    except Exception as exc:
        if is_transient_message(str(exc)):
            raise
        raise AirflowFailException(f"{exc}\n(not retried: not a connection failure)") from None


def summarise_loads(outcomes: list[dict]) -> dict[str, int]:
    """{'files': n, '<status>': count ...} for the log and the run record."""
    summary = {"files": len(outcomes)}
    for outcome in outcomes:
        summary[outcome["status"]] = summary.get(outcome["status"], 0) + 1
    return summary


# --- Callbacks: runs and failures where the API and operators can read them ----------------------------------


def _run_started(context) -> datetime | None:
    dag_run = context.get("dag_run")
    return getattr(dag_run, "start_date", None) if dag_run is not None else None


def _task_label(ti) -> str:
    map_index = getattr(ti, "map_index", -1)
    return ti.task_id + (f"[{map_index}]" if map_index is not None and map_index >= 0 else "")


def on_task_failure(context) -> None:
    """Task callback, after the last try: the failed task and why go on the run's record (ops.pipeline_runs)."""
    ti, exc = context["ti"], context.get("exception")
    # The exception's class and first line: load errors are retold without values (load_file), dbt's
    # without the refused row (_prepare_dbt_task).
    reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}" if exc else "failed"
    try:
        record_task_failure(ti.run_id, ti.dag_id, _task_label(ti), reason, started_at=_run_started(context))
    except Exception:  # noqa: BLE001 - a callback must not hide the task's own failure
        log.exception("could not record the failure of %s in ops.pipeline_runs", ti.task_id)


def on_run_finished(context) -> None:
    """DAG callback (success and failure): the run's final state on its record."""
    dag_run = context.get("dag_run")
    run_id = context.get("run_id") or getattr(dag_run, "run_id", None)
    dag_id = getattr(context.get("dag"), "dag_id", None) or getattr(dag_run, "dag_id", None)
    failed = context.get("reason") not in (None, "success")
    try:
        record_run(run_id, dag_id, "failed" if failed else "success", started_at=_run_started(context),
                   detail=None if not failed else f"run failed ({context.get('reason')})")
    except Exception:  # noqa: BLE001
        log.exception("could not record run %s of %s in ops.pipeline_runs", run_id, dag_id)


def record_loads(context, summary: dict[str, int]) -> None:
    ti = context["ti"]
    record_run(ti.run_id, ti.dag_id, "running", started_at=_run_started(context),
               files_loaded=summary.get("loaded", 0), detail=None)


# --- dbt ----------------------------------------------------------------------------------------------------


def full_refresh_requested(context) -> bool:
    """The form's full_refresh, or a full refresh asked of medilink_ingest and passed on in the asset event."""
    if (context.get("params") or {}).get("full_refresh"):
        return True
    events = context.get("triggering_asset_events") or {}
    return any((event.extra or {}).get("full_refresh") for asset in events for event in events[asset])


def _prepare_dbt_task(context, operator) -> None:
    """Cosmos interceptor, run in the task just before dbt starts.

    * The DBT_PG_* variables that dbt/profiles.yml reads, from DATABASE_URL as `elt build` takes them: the DAG
      holds no connection details. With them the DBT_SDC_* of the marts' disclosure control (SDC_THRESHOLD,
      SDC_ROUNDING_BASE), so a nightly run publishes what `elt build` would.
    * Retries only where they can help: a failed dbt test, or a model that failed for any reason but a lost
      or refused connection, fails the task at once.
    """
    from airflow.sdk.exceptions import AirflowFailException
    from airflow.sdk.log import mask_secret

    from elt.config import get_settings
    from elt.transform import dbt_connection_env, keep_row_values_out_of_dbt_logs, without_row_values

    keep_row_values_out_of_dbt_logs()
    env = dbt_connection_env(get_settings())
    if env["DBT_PG_PASSWORD"]:
        mask_secret(env["DBT_PG_PASSWORD"])
    operator.env = {**(operator.env or {}), **env}

    is_test = type(operator).__name__.startswith("DbtTest")
    raise_on_failure = operator.handle_exception_dbt_runner

    def fail_fast_unless_transient(result) -> None:
        try:
            raise_on_failure(result)
        except Exception as exc:
            # The message goes to the task log and ops.pipeline_runs: without the refused row's values, and
            # without the original exception chained to it.
            message = without_row_values(str(exc))
            if not is_test and is_transient_message(message):
                if message == str(exc):
                    raise
                raise RuntimeError(message) from None
            kind = "a test failed: the data needs fixing" if is_test else "not a connection failure"
            raise AirflowFailException(f"{message}\n(not retried: {kind})") from None

    operator.handle_exception_dbt_runner = fail_fast_unless_transient


def dbt_tasks(settings, upstream) -> None:
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
    dbt_args = {"install_deps": False, "interceptors": [_prepare_dbt_task]}

    models = DbtTaskGroup(
        group_id="dbt",
        project_config=ProjectConfig(dbt_project_path=project, manifest_path=manifest_path(settings),
                                     install_dbt_deps=False),
        profile_config=profile,
        execution_config=execution,
        render_config=RenderConfig(
            load_method=LoadMode.DBT_MANIFEST,  # parsing the DAG reads a file; it never runs dbt
            # The bed models are built by nhs_beds_ingest after each KH03 load: one owner per table, so two DAGs
            # never rebuild the same table at once.
            exclude=["tag:nhs_beds"],
            test_behavior=TestBehavior.AFTER_EACH,
            # A test on several models in one model's test task would run before the other models exist.
            should_detach_multiple_parents_tests=True,
            emit_datasets=False,
        ),
        # test tasks ignore full_refresh; `plan` decides it (the form, or the ingest run's asset event)
        operator_args={**dbt_args, "full_refresh": "{{ ti.xcom_pull(task_ids='plan') }}"},
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
