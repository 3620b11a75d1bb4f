"""Pipeline runs as the API and operators see them (`ops.pipeline_runs`), and which failures are worth a retry.

Airflow keeps its own run history, but the API and BI tools read the warehouse, not Airflow's metadata
database: the DAGs' callbacks (elt.orchestration) write each run's state here, naming the tasks that failed
and why. A run is (dag_id, run_id): scheduled run ids repeat across DAGs.
"""

from __future__ import annotations

import logging
import os
import socket
import traceback
from datetime import datetime

import psycopg
from botocore.exceptions import BotoCoreError, ClientError, ReadTimeoutError
from botocore.exceptions import ConnectionError as BotoConnectionError

from elt.config import Settings, get_settings

log = logging.getLogger(__name__)

# Failures a retry can cure: the database or object store was unreachable or went away mid-way.
TRANSIENT = (psycopg.OperationalError, BotoConnectionError, ReadTimeoutError, ConnectionError, TimeoutError,
             socket.timeout)


def is_transient(exc: BaseException) -> bool:
    """True for failures that may pass on a retry (connections, timeouts); False for bad data or code."""
    return _transient_cause(exc) is not None


def _transient_cause(exc: BaseException | None) -> BaseException | None:
    """The connection or timeout failure in the exception's chain, if there is one."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, TRANSIENT) or _server_side_s3_error(exc):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


# This package's folder: the innermost of its frames says where a failure surfaced in code we own.
_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


def blames_the_file(exc: BaseException) -> bool:
    """True when a failure that a retry cannot cure came from this file's content: a reader tripping over it, or
    a Postgres data exception (SQLSTATE class 22). False for the warehouse (a missing table, a privilege) and the
    object store, which would fail every file alike: quarantining all of them would not help."""
    if is_transient(exc):
        return False
    if isinstance(exc, psycopg.Error):
        return isinstance(exc, psycopg.DataError)
    return not isinstance(exc, BotoCoreError | ClientError)


def describe_failure(exc: BaseException) -> str:
    """An exception in words that carry no value from a file: its class, a Postgres SQLSTATE, where in the code it
    was raised, and the message only of a connection failure (which is about the network, never a row). What the
    ledger, the task log and ops.pipeline_runs say about a load that failed unexpectedly."""
    parts = [type(exc).__name__]
    sqlstate = getattr(exc, "sqlstate", None)
    if sqlstate:
        parts.append(f"SQLSTATE {sqlstate}")
    cause = _transient_cause(exc)
    if cause is not None and str(cause).strip():  # the connection failure's own words, not a wrapper's
        parts.append(str(cause).strip().splitlines()[0][:200])
    frames = traceback.extract_tb(exc.__traceback__) if exc.__traceback__ else []
    ours = [frame for frame in frames if frame.filename.startswith(_PACKAGE)] or frames
    if ours:
        where = ours[-1]
        path = os.path.relpath(where.filename, os.path.dirname(_PACKAGE.rstrip(os.sep))) if where.filename.startswith(_PACKAGE) \
            else where.filename
        parts.append(f"raised at {path}:{where.lineno} in {where.name}")
    return ", ".join(parts)


def _server_side_s3_error(exc: BaseException) -> bool:
    """S3 answered 5xx (InternalError, ServiceUnavailable, SlowDown) even after boto3's own retries: the store's
    trouble, not the request's, so a later attempt may pass (4xx, such as access denied, would not)."""
    return isinstance(exc, ClientError) and exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) >= 500


# dbt reports a lost or refused connection only as text (dbt-postgres wraps psycopg2's errors).
TRANSIENT_MESSAGES = (
    "could not connect to server", "connection refused", "server closed the connection unexpectedly",
    "terminating connection due to administrator command", "connection already closed", "connection timed out",
    "ssl syscall error", "the database system is starting up", "the database system is shutting down",
    "the database system is in recovery mode", "could not translate host name", "failed to connect",
)


def is_transient_message(text: str) -> bool:
    """True when an error's text (dbt's, say) reads as a lost or refused database connection."""
    lowered = text.lower()
    return any(marker in lowered for marker in TRANSIENT_MESSAGES)


_UPSERT = (
    "insert into ops.pipeline_runs as runs (run_id, dag_id, state, started_at, finished_at, files_loaded, detail, "
    "failed_tasks) values (%(run_id)s, %(dag_id)s, %(state)s, coalesce(%(started_at)s, now()), "
    "case when %(state)s = 'running' then null else now() end, %(files_loaded)s, %(detail)s, %(failed_tasks)s) "
    "on conflict (dag_id, run_id) do update set state = excluded.state, finished_at = excluded.finished_at, "
    "files_loaded = coalesce(excluded.files_loaded, runs.files_loaded), "
)


def record_run(run_id: str, dag_id: str, state: str, *, started_at: datetime | None = None,
               files_loaded: int | None = None, detail: str | None = None, settings: Settings | None = None) -> None:
    """Upsert one run's outcome. state: running, success or failed. A success clears earlier failures (a cleared
    and re-run task); a failure keeps the first failed task's reason, which says more than the run's."""
    settings = settings or get_settings()
    with psycopg.connect(settings.database_url, autocommit=True, application_name="elt") as conn:
        conn.execute(
            _UPSERT + "detail = case when excluded.state = 'failed' then coalesce(runs.detail, excluded.detail) "
            "when excluded.state = 'success' then excluded.detail else runs.detail end, "
            "failed_tasks = case when excluded.state = 'success' then '{}' else runs.failed_tasks end",
            {"run_id": run_id, "dag_id": dag_id, "state": state, "started_at": started_at,
             "files_loaded": files_loaded, "detail": detail, "failed_tasks": []},
        )
    log.info("run %s of %s: %s%s", run_id, dag_id, state, f" ({detail})" if detail else "")


def record_task_failure(run_id: str, dag_id: str, task: str, reason: str, *, started_at: datetime | None = None,
                        settings: Settings | None = None) -> None:
    """A task of the run failed for good (after its retries): the run is failed, the task is named on it."""
    settings = settings or get_settings()
    detail = f"{task}: {reason}"[:1000]
    with psycopg.connect(settings.database_url, autocommit=True, application_name="elt") as conn:
        conn.execute(
            _UPSERT + "detail = coalesce(runs.detail, excluded.detail), "
            "failed_tasks = case when %(task)s = any(runs.failed_tasks) then runs.failed_tasks "
            "else runs.failed_tasks || %(task)s end",
            {"run_id": run_id, "dag_id": dag_id, "state": "failed", "started_at": started_at, "files_loaded": None,
             "detail": detail, "failed_tasks": [task], "task": task},
        )
    log.warning("run %s of %s: task %s failed (%s)", run_id, dag_id, task, reason)
