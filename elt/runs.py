"""Pipeline runs as the API and operators see them (`ops.pipeline_runs`), and which failures are worth a retry.

Airflow keeps its own run history, but the API and BI tools read the warehouse, not Airflow's metadata
database: the last task of each DAG run writes the run's outcome here, naming the failed steps.
"""

from __future__ import annotations

import logging
import socket
from datetime import datetime

import psycopg
from botocore.exceptions import ConnectionError as BotoConnectionError
from botocore.exceptions import ReadTimeoutError

from elt.config import Settings, get_settings

log = logging.getLogger(__name__)

# Failures a retry can cure: the database or object store was unreachable or went away mid-way.
TRANSIENT = (psycopg.OperationalError, BotoConnectionError, ReadTimeoutError, ConnectionError, TimeoutError,
             socket.timeout)


def is_transient(exc: BaseException) -> bool:
    """True for failures that may pass on a retry (connections, timeouts); False for bad data or code."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, TRANSIENT):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def record_run(run_id: str, dag_id: str, state: str, *, started_at: datetime | None = None,
               files_loaded: int | None = None, detail: str | None = None, settings: Settings | None = None) -> None:
    """Upsert one run's outcome. state: success or failed; detail says what failed, without personal data."""
    settings = settings or get_settings()
    with psycopg.connect(settings.database_url, autocommit=True, application_name="elt") as conn:
        conn.execute(
            "insert into ops.pipeline_runs (run_id, dag_id, state, started_at, finished_at, files_loaded, detail) "
            "values (%s, %s, %s, coalesce(%s, now()), now(), %s, %s) on conflict (run_id) do update set "
            "state = excluded.state, finished_at = excluded.finished_at, files_loaded = excluded.files_loaded, "
            "detail = excluded.detail",
            (run_id, dag_id, state, started_at, files_loaded, detail),
        )
    log.info("run %s of %s: %s%s", run_id, dag_id, state, f" ({detail})" if detail else "")
