"""What the Airflow DAGs share: the asset that links ingestion to dbt, retry policy, callbacks, the dbt task group.

The DAG files in airflow/dags/ stay short and declarative; everything they do at run time is here or in
elt.pipeline, so the CLI, the DAGs and the tests run the same code. Airflow is imported inside functions (and
by elt.dbt_watch, which only the DAGs import): `elt` itself runs without it.

Retry policy (docs/operations.md, "Failures and retries"):
* a load that failed on a connection or a timeout is retried with exponential backoff; any other load
  failure (a bug, a missing table) fails at once, because running it again gives the same answer;
* a dbt model is retried only when dbt's error reads as a lost or refused connection (its task then builds it
  alone); the nightly `dbt build` itself is never retried: its model tasks take over (elt.dbt_watch);
* a dbt test is never retried: it checks data, and the data will not change by itself.
Bad files never fail a task: they are quarantined and the run goes on (elt.pipeline).
"""

from __future__ import annotations

import logging
from datetime import datetime

import pendulum

log = logging.getLogger(__name__)

DEFAULT_ARGS = {
    "owner": "data-engineering",
    "retries": 2,
    "retry_delay": pendulum.duration(seconds=30),
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": pendulum.duration(minutes=10),
}


# --- Loads ---------------------------------------------------------------------------------------------------


def load_file(key: str, *, dry_run: bool, settings=None) -> dict:
    """elt.pipeline.ingest_file for one key. A failure that a retry cannot cure fails the task without retries.

    What reaches the task log and ops.pipeline_runs is the error's class and place (elt.runs.describe_failure),
    never its message or a chained traceback: an error raised while reading a file may quote the file.
    """
    from airflow.sdk.exceptions import AirflowFailException

    from elt.pipeline import ingest_file
    from elt.runs import describe_failure, is_transient

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


def build_models(select: str | list[str] | None = None, *, exclude: str | None = None, full_refresh: bool = False,
                 settings=None) -> None:
    """`dbt build --select <select> --exclude <exclude>` in one task (`select`: one selector, or a family's
    `dbt_select()`). Retried only when dbt lost or was refused its connection: a failed test or a broken model
    gives the same answer again."""
    from airflow.sdk.exceptions import AirflowFailException

    from elt.runs import is_transient_message
    from elt.transform import build

    try:
        build(select=select, exclude=exclude, full_refresh=full_refresh, settings=settings)
    except Exception as exc:
        if is_transient_message(str(exc)):
            raise
        raise AirflowFailException(f"{exc}\n(not retried: not a connection failure)") from None


def publish_loads(context, outcomes: list[dict], raw, marts_dag_id: str) -> dict:
    """An ingest run's `publish`: records what the loads did and emits `raw` (the family's asset, which its marts DAG
    is scheduled on) when a file loaded, or when the form asked for a rebuild; else ends skipped, saying why."""
    from airflow.sdk.exceptions import AirflowSkipException

    params = context["params"]
    summary = summarise_loads(outcomes)
    record_loads(context, summary)
    if params.get("dry_run"):
        raise AirflowSkipException(f"dry run, nothing published: {summary}")
    rebuild = bool(params.get("rebuild_marts") or params.get("full_refresh"))
    if not summary.get("loaded") and not rebuild:
        raise AirflowSkipException(f"no new file loaded, the marts stay as they are: {summary}")
    context["outlet_events"][raw].extra = {"files_loaded": summary.get("loaded", 0),
                                           "full_refresh": bool(params.get("full_refresh"))}
    log.info("published %s: %s; %s rebuilds the marts", raw.name, summary, marts_dag_id)
    return summary


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
    from elt.runs import record_task_failure

    ti, exc = context["ti"], context.get("exception")
    # The exception's class and first line: load errors are retold without values (load_file), dbt's
    # without the refused row (elt.dbt_watch).
    reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}" if exc else "failed"
    try:
        record_task_failure(ti.run_id, ti.dag_id, _task_label(ti), reason, started_at=_run_started(context))
    except Exception:  # noqa: BLE001 - a callback must not hide the task's own failure
        log.exception("could not record the failure of %s in ops.pipeline_runs", ti.task_id)


def on_run_finished(context) -> None:
    """DAG callback (success and failure): the run's final state on its record."""
    from elt.runs import record_run

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
    from elt.runs import record_run

    ti = context["ti"]
    record_run(ti.run_id, ti.dag_id, "running", started_at=_run_started(context),
               files_loaded=summary.get("loaded", 0), detail=None)


# --- dbt ----------------------------------------------------------------------------------------------------


def full_refresh_requested(context) -> bool:
    """The form's full_refresh, or a full refresh asked of the ingest DAG and passed on in the asset event."""
    if (context.get("params") or {}).get("full_refresh"):
        return True
    events = context.get("triggering_asset_events") or {}
    return any((event.extra or {}).get("full_refresh") for asset in events for event in events[asset])


def dbt_tasks(settings, family, *, pool: str | None = None) -> None:
    """`dbt_build` (one `dbt build` of the family's dbt paths, elt.families.Family.dbt_select()) and the tasks that
    follow it, one per model, its tests, each test on several models and the tests on sources (elt.dbt_plan,
    elt.dbt_watch; docs/decisions/0015), and `all_dbt_tasks_succeeded`, which fails the run when any of them
    failed."""
    from airflow.sdk import TaskGroup

    from elt.dbt_plan import WatchTask, node_name, watch_tasks
    from elt.dbt_watch import BUILD_TASK, GATE_TASK, DbtBuild, DbtNodeTask
    from elt.transform import manifest_path

    # No edges: every task follows it from the start.
    DbtBuild(task_id=BUILD_TASK, select=family.dbt_select(), doc_md=DbtBuild.__doc__,
             **({"pool": pool} if pool else {}))
    groups: dict[tuple[str, ...], TaskGroup] = {}
    tasks = {}
    plan = watch_tasks(manifest_path(settings), select_paths=family.dbt_paths, unit_tests=settings.dbt_unit_tests)
    for watch in plan:
        for depth in range(1, len(watch.group) + 1):
            path = watch.group[:depth]
            if path not in groups:
                groups[path] = TaskGroup(group_id=path[-1], parent_group=groups.get(path[:-1]))
        task = DbtNodeTask(task_id=watch.name, watch=watch, task_group=groups.get(watch.group),
                           doc_md=f"Follows `{BUILD_TASK}` for: {', '.join(node_name(w) for w in watch.watched)}. "
                                  f"Alone (a retry, a clear): `dbt {' '.join(watch.rerun)}`.")
        for upstream in watch.upstream:
            tasks[upstream] >> task
        tasks[watch.task_id] = task
    # A failed task's downstream tasks end skipped (dbt did not run them), and a run's state comes from its last
    # tasks: this one fails the run when any dbt task failed. Its failure is theirs: not recorded, not retried.
    gate = WatchTask((), GATE_TASK, "gate", tuple(tasks), ())
    DbtNodeTask(task_id=gate.name, watch=gate, nodes=tuple(uid for watch in plan for uid in watch.watched), retries=0,
                on_failure_callback=None,
                doc_md="Fails the run when any dbt task failed (the tasks downstream of it end skipped).") \
        .set_upstream(list(tasks.values()))
