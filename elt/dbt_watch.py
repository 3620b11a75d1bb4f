"""A family's `dbt build` in one task, and one task per model that follows it (docs/decisions/0015).

`DbtBuild` runs `dbt build` of the family's selection (its dbt paths, elt.families.Family.dbt_select()) once, in
its task's process, and publishes each node's result as dbt finishes it: the XCom `dbt_results`, {unique id:
[status, message]}, the message only for a node that failed and without a refused row's values. Each
`DbtNodeTask` (elt.dbt_plan.WatchTask) follows its nodes by elt.dbt_plan.follow. It starts in the triggerer
(`start_from_trigger`): while it waits, and when it ends in success or skipped, no worker process is started
for it. A failure, and a re-run of its nodes alone, resume on a worker: there dbt's message becomes the task's
error and the retry policy applies (a test is never retried, a model only when dbt lost its connection).

Every task of the run waits in the triggerer from the start (trigger rule `always`), so the model tasks finish
as dbt finishes their models instead of one scheduler round trip after another; the order of a re-run, which
the scheduler no longer enforces, is kept by `follow` (a node runs alone only after its upstream tasks
succeeded). Under `dag.test()` (the tests: no triggerer) the same decision runs in the task, which reschedules
itself a second later while it has to wait.

This module imports Airflow and is imported by the DAG files and by the triggerer (by class path), never by
the rest of `elt`.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException, AirflowRescheduleException, AirflowSkipException
from airflow.triggers.base import (
    BaseTrigger,
    StartTriggerArgs,
    TaskSkippedEvent,
    TaskSuccessEvent,
    TriggerEvent,
)

from elt.dbt_plan import FAILED, PASSED, Decision, WatchTask, all_finished, follow

log = logging.getLogger(__name__)

BUILD_TASK = "dbt_build"
GATE_TASK = "all_dbt_tasks_succeeded"
RESULTS_KEY = "dbt_results"
POLL_SECONDS = 0.2  # how often a waiting task looks at the build's results (one look serves all of a run's tasks)
_MESSAGE_CHARS = 600


def target_path(settings) -> Path:
    """Where the Airflow tasks' dbt writes: beside, not over, target/manifest.json (which the DAG renders from,
    and which the dag-processor may be reading). Kept between runs, so every build starts with a partial parse."""
    return Path(settings.dbt_project_dir) / "target" / "airflow"


def _prepare(settings) -> None:
    from airflow.sdk.log import mask_secret

    password = settings.pg_parts()["password"]
    if password:
        mask_secret(password)


def _clean(message: str | None) -> str | None:
    """A node's message as the task may show it: Postgres's DETAIL and CONTEXT lines (a refused row's values)
    removed, and short."""
    from elt.transform import without_row_values

    if not message:
        return None
    return without_row_values(str(message)).strip()[:_MESSAGE_CHARS]


def decide(watch: WatchTask, *, try_number: int, build_task_id: str, results: dict, states: dict,
           nodes: tuple[str, ...] = ()) -> Decision:
    """elt.dbt_plan.follow for a dbt task. For the closing task (kind "gate"), which follows the tasks `watched`
    and the build's `nodes`: success as soon as every node has passed in the build (then every task ends in
    success on that same look, and the run is not held up by one more round), else whether the tasks all
    finished well (elt.dbt_plan.all_finished)."""
    if watch.kind != "gate":
        return follow(watch, try_number=try_number, producer_state=states.get(build_task_id), results=results,
                      upstream_states=states)
    if try_number <= 1 and nodes and all(results.get(uid, [None])[0] in PASSED for uid in nodes):
        return Decision("success")
    return all_finished(watch.watched, states)


def _status(value) -> str:
    return str(getattr(value, "value", value))


class _Publisher:
    """The build's results so far, pushed to XCom by one thread at most every `interval` seconds: dbt's threads
    only record a result and never wait for Airflow."""

    def __init__(self, ti, interval: float = 0.5):
        self.ti = ti
        self.interval = interval
        self.results: dict[str, list] = {}
        self._lock = threading.Lock()
        self._changed = threading.Event()
        self._closed = threading.Event()  # set by close(): also ends the pause between two pushes
        self._thread = threading.Thread(target=self._run, name="dbt-results", daemon=True)
        self._thread.start()

    def record(self, unique_id: str, status: str, message: str | None) -> None:
        with self._lock:
            self.results[unique_id] = [status, _clean(message) if status in FAILED else None]
        self._changed.set()

    def on_event(self, event) -> None:
        """dbt callback (in dbt's threads): a node finished."""
        try:
            if event.info.name != "NodeFinished":
                return
            self.record(event.data.node_info.unique_id, event.data.run_result.status, event.data.run_result.message)
        except Exception:  # noqa: BLE001 - a callback that raises would become a failure of the node in dbt
            log.exception("could not record a dbt node's result")

    def _push(self) -> None:
        with self._lock:
            snapshot = dict(self.results)
        self.ti.xcom_push(key=RESULTS_KEY, value=snapshot)

    def _run(self) -> None:
        while True:
            self._changed.wait()
            if self._closed.is_set():
                return
            self._changed.clear()
            try:
                self._push()
            except Exception:  # noqa: BLE001 - the next push carries everything; the final one is checked
                log.exception("could not publish the dbt results so far")
            if self._closed.wait(self.interval):  # the build has ended: close() pushes the rest at once
                return

    def close(self, final_results) -> None:
        """Stop the thread, add dbt's own list of results (in case an event was missed) and push once more."""
        self._closed.set()
        self._changed.set()
        self._thread.join()
        for result in final_results:
            self.record(result.node.unique_id, _status(result.status), result.message)
        self._push()


class DbtBuild(BaseOperator):
    """`dbt build --select <select>` (a family's dbt paths, `path:...`; with `--full-refresh` when the run asks for
    it) in this task's process.

    It runs once per run and is never retried: if it fails or dies, each model task runs its own model instead
    (elt.dbt_plan.follow). It succeeds when dbt ran to the end, whatever the nodes' results: a failed model or
    test fails its own task. Cleared, it ends skipped at once: clear the model tasks to re-run models, or trigger
    a new run to build everything again.
    """

    ui_color = "#d7e7f7"

    def __init__(self, *, select: list[str], **kwargs):
        kwargs["retries"] = 0
        super().__init__(**kwargs)
        self.select = list(select)

    def execute(self, context):
        from elt.config import get_settings
        from elt.orchestration import full_refresh_requested
        from elt.transform import invoke_dbt

        ti = context["ti"]
        if ti.try_number > 1:
            raise AirflowSkipException(f"{self.task_id} builds once per run; its model tasks re-run their own models "
                                       "(clear those), or trigger a new run to build everything again")
        settings = get_settings()
        _prepare(settings)
        full_refresh = full_refresh_requested(context)
        args = ["build", "--select", *self.select, *(["--full-refresh"] if full_refresh else [])]
        log.info("dbt %s (%s)", " ".join(args), "full refresh" if full_refresh else "incremental models: new rows only")
        publisher = _Publisher(ti)
        result = None
        try:
            result = invoke_dbt(args, target_path=target_path(settings), settings=settings,
                                callbacks=[publisher.on_event])
        finally:
            publisher.close(getattr(getattr(result, "result", None), "results", None) or [])
        counts: dict[str, int] = {}
        for status, _ in publisher.results.values():
            counts[status] = counts.get(status, 0) + 1
        log.info("dbt build: %s", ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "no nodes")
        if result.exception is not None:
            raise RuntimeError(f"dbt build did not run to the end: {_clean(str(result.exception))}. "
                               "Each model task runs its own model instead.")
        return counts


class DbtNodeTask(BaseOperator):
    """A model's run, its tests, a test on several models or the tests on sources (`watch`, an
    elt.dbt_plan.WatchTask), following `dbt_build`: see the module's docstring. With a `gate` watch, the run's
    closing task: it fails when any dbt task failed (their downstream tasks end skipped, and a run's state comes
    from its last tasks), at the moment the last of them finishes."""

    start_from_trigger = True
    ui_color = "#e8f7e4"

    def __init__(self, *, watch: WatchTask, build_task_id: str = BUILD_TASK, nodes: tuple[str, ...] = (), **kwargs):
        # Waiting starts with the run (see the module's docstring); edges show dbt's order and carry "clear
        # downstream"; `follow` keeps that order for a re-run.
        kwargs["trigger_rule"] = "always"
        super().__init__(**kwargs)
        self.kind = watch.kind
        self.watched = list(watch.watched)
        self.rerun = list(watch.rerun)
        self.watched_upstream = list(watch.upstream)
        self.build_task_id = build_task_id
        self.nodes = sorted(nodes)
        self.start_trigger_args = StartTriggerArgs(
            trigger_cls=f"{__name__}.DbtNodeTrigger", trigger_kwargs=self._trigger_kwargs(), next_method="resume",
            next_kwargs=None, timeout=None)

    def _trigger_kwargs(self) -> dict:
        return {"kind": self.kind, "watched": self.watched, "upstream": self.watched_upstream,
                "build_task_id": self.build_task_id, "nodes": self.nodes}

    def _watch(self) -> WatchTask:
        return WatchTask((), self.task_id, self.kind, tuple(self.watched), tuple(self.rerun),
                         tuple(self.watched_upstream))

    def _decide(self, context) -> Decision:
        from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

        ti = context["ti"]
        # States first: once they say the build has finished, the results read after them are its last.
        states = RuntimeTaskInstance.get_task_states(dag_id=ti.dag_id, run_ids=[ti.run_id]).get(ti.run_id, {})
        results = ti.xcom_pull(task_ids=self.build_task_id, key=RESULTS_KEY) or {}
        return decide(self._watch(), try_number=ti.try_number, build_task_id=self.build_task_id, results=results,
                      states=states, nodes=tuple(self.nodes))

    def execute(self, context):
        """Without a triggerer (dag.test(), `airflow tasks test`): decide here; reschedule while waiting."""
        decision = self._decide(context)
        if decision.action == "wait":
            raise AirflowRescheduleException(datetime.now(UTC) + timedelta(seconds=1))
        return self._act(decision, context)

    def resume(self, context, event=None):
        """After the trigger: decide again on what is there now (the event only says it is time to look)."""
        decision = self._decide(context)
        if decision.action == "wait":
            self.defer(trigger=DbtNodeTrigger(**self._trigger_kwargs()), method_name="resume")
        return self._act(decision, context)

    def _act(self, decision: Decision, context) -> None:
        if decision.action == "success":
            log.info("%s: built by %s (its log has dbt's output)", self.task_id, self.build_task_id)
        elif decision.action == "skip":
            raise AirflowSkipException(f"dbt did not run {self.task_id}: {decision.reason}")
        elif decision.action == "failed" and self.kind == "gate":
            raise AirflowFailException(f"dbt tasks did not succeed: {decision.reason}")
        elif decision.action == "failed":
            raise self._failure(decision.reason)
        else:
            self._run_alone(context)

    def _failure(self, message: str) -> Exception:
        from elt.runs import is_transient_message

        what = "dbt tests failed" if self.kind == "tests" else "dbt model failed"
        if self.kind == "tests":
            return AirflowFailException(f"{what}: {message}\n(not retried: a test failed: the data needs fixing)")
        if is_transient_message(message):
            return DbtNodeFailed(f"{what}: {message}\n(retried: dbt lost its connection)")
        return AirflowFailException(f"{what}: {message}\n(not retried: not a connection failure)")

    def _run_alone(self, context) -> None:
        """`dbt <rerun>` in this process, in a target folder of its own (another task may be running alone too),
        starting from the nightly build's partial parse."""
        from elt.config import get_settings
        from elt.orchestration import full_refresh_requested
        from elt.transform import invoke_dbt

        settings = get_settings()
        _prepare(settings)
        args = [*self.rerun]
        if self.kind == "model" and full_refresh_requested(context):
            args.append("--full-refresh")
        log.info("running alone: dbt %s", " ".join(args))
        with tempfile.TemporaryDirectory(prefix="dbt-target-") as target:
            parsed = target_path(settings) / "partial_parse.msgpack"
            if parsed.exists():
                shutil.copy2(parsed, Path(target) / parsed.name)
            result = invoke_dbt(args, target_path=Path(target), settings=settings)
        if result.success:
            return
        if result.exception is not None:
            raise self._failure(_clean(str(result.exception)) or type(result.exception).__name__)
        failed = [f"{r.node.name} {_status(r.status)}: {_clean(r.message) or ''}" for r in result.result.results
                  if _status(r.status) in FAILED]
        raise self._failure("; ".join(failed) or "dbt reported a failure")


class DbtNodeFailed(Exception):
    """A model that failed because dbt lost its connection: Airflow retries its task, which builds it alone."""


# --- The trigger -----------------------------------------------------------------------------------------------

# One look at a run's results and task states serves every task of that run waiting in this triggerer.
_snapshots: dict[tuple[str, str, str], tuple[float, asyncio.Future]] = {}


async def _fetch(dag_id: str, run_id: str, build_task_id: str) -> tuple[dict, dict]:
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance
    from airflow.sdk.execution_time.xcom import XCom
    from asgiref.sync import sync_to_async

    states = await sync_to_async(RuntimeTaskInstance.get_task_states)(dag_id=dag_id, run_ids=[run_id])
    results = await XCom.aget_one(key=RESULTS_KEY, dag_id=dag_id, task_id=build_task_id, run_id=run_id, map_index=-1)
    return results or {}, states.get(run_id, {})


async def _snapshot(dag_id: str, run_id: str, build_task_id: str) -> tuple[dict, dict]:
    key = (dag_id, run_id, build_task_id)
    now = time.monotonic()
    cached = _snapshots.get(key)
    if cached is None or now - cached[0] > POLL_SECONDS * 0.9:
        for stale in [k for k, (at, _) in _snapshots.items() if now - at > 3600]:
            del _snapshots[stale]
        cached = (now, asyncio.ensure_future(_fetch(dag_id, run_id, build_task_id)))
        _snapshots[key] = cached
    try:
        return await asyncio.shield(cached[1])
    except Exception:
        _snapshots.pop(key, None)  # the next look fetches again
        raise


class DbtNodeTrigger(BaseTrigger):
    """Waits in the triggerer until `follow` decides; ends the task there on success or skip, else hands it to
    a worker (`DbtNodeTask.resume`)."""

    def __init__(self, kind: str, watched: list[str], upstream: list[str], build_task_id: str = BUILD_TASK,
                 nodes: list[str] | None = None):
        super().__init__()
        self.kind = kind
        self.watched = list(watched)
        self.upstream = list(upstream)
        self.build_task_id = build_task_id
        self.nodes = list(nodes or [])

    def serialize(self):
        return (f"{__name__}.DbtNodeTrigger", {"kind": self.kind, "watched": self.watched, "upstream": self.upstream,
                                              "build_task_id": self.build_task_id, "nodes": self.nodes})

    async def run(self):
        ti = self.task_instance
        watch = WatchTask((), ti.task_id, self.kind, tuple(self.watched), (), tuple(self.upstream))
        while True:
            results, states = await _snapshot(ti.dag_id, ti.run_id, self.build_task_id)
            decision = decide(watch, try_number=ti.try_number, build_task_id=self.build_task_id, results=results,
                              states=states, nodes=tuple(self.nodes))
            if decision.action == "wait":
                await asyncio.sleep(POLL_SECONDS)
                continue
            if decision.action == "success":
                self.log.info("%s: built by %s (its log has dbt's output)", ti.task_id, self.build_task_id)
                yield TaskSuccessEvent()
            elif decision.action == "skip":
                self.log.info("dbt did not run %s: %s", ti.task_id, decision.reason)
                yield TaskSkippedEvent()
            else:
                yield TriggerEvent({"action": decision.action})
            return
