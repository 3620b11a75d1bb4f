"""Pipeline runs as the API and operators see them (`ops.pipeline_runs`), and which failures are worth a retry.

Airflow keeps its own run history, but the API and BI tools read the warehouse, not Airflow's metadata
database: the DAGs' callbacks (elt.orchestration) write each run's state here, naming the tasks that failed
and why. A run is (dag_id, run_id): scheduled run ids repeat across DAGs.
"""

from __future__ import annotations

import logging
import socket
from datetime import datetime

import psycopg
from botocore.exceptions import ClientError, ReadTimeoutError
from botocore.exceptions import ConnectionError as BotoConnectionError

from elt.config import Settings, get_settings

log = logging.getLogger(__name__)

# Failures a retry can cure: the database or object store was unreachable or went away mid-way.
TRANSIENT = (psycopg.OperationalError, BotoConnectionError, ReadTimeoutError, ConnectionError, TimeoutError,
             socket.timeout)


def is_transient(exc: BaseException) -> bool:
    """True for failures that may pass on a retry (connections, timeouts); False for bad data or code."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, TRANSIENT) or _server_side_s3_error(exc):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


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
