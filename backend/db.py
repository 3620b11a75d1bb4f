"""The pooled SQLAlchemy engine, attached to the app. Views run parameterized SQL on published marts.

The list endpoints' hot path (`transaction()`) talks to the pooled connection's psycopg driver directly and
pipelines its statements: a page, its total, its provenance and, for patient-level reads, the audit row go to
Postgres together and come back in one round trip, in one transaction (docs/decisions/0014-api-one-round-trip-per-page.md).

It logs in as the API's own login (`health_api`, API_DB_PASSWORD: backend/config.py), a member of `api_reader`
only, so that nothing which reaches SQL through the API can write data or become another role: `RESET ROLE`
on its connection leaves `health_api`, with `api_reader`'s rights and no more (tests/backend/test_db_logins.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar
from urllib.parse import unquote, urlsplit

import psycopg
from flask import Flask, current_app, g
from sqlalchemy import Connection, Engine, create_engine

from backend.config import ApiSettings
from elt.warehouse.roles import API_LOGIN

log = logging.getLogger(__name__)
T = TypeVar("T")


def init_app(app: Flask, settings: ApiSettings) -> None:
    # Every connection: a statement timeout, read only unless a transaction says otherwise (the audit trail),
    # and the api_reader role, which may read the published marts and nothing raw.
    # Every statement the API repeats is planned once per connection (plan_cache_mode): a page in its index's order,
    # its meta, a count, the key and audit rows, whose plans do not turn on the values (issue 14: Postgres's own choice
    # re-planned the meta statement on every request, about 70 µs of its CPU per page; decision 0014).
    options = (f"-c statement_timeout={settings.statement_timeout_ms} -c default_transaction_read_only=on "
               "-c plan_cache_mode=force_generic_plan")
    if settings.db_role:
        options += f" -c role={settings.db_role}"
    if settings.db_password is None or not settings.db_password.get_secret_value():
        log.warning("%s is not set: the API logs in as %r, the user of its database URL, rather than as its own "
                    "login %s; make sure that user is not the warehouse owner or a superuser (docs/operations.md, "
                    "Security)", API_LOGIN.password_variable, unquote(urlsplit(settings.database_url).username or ""),
                    API_LOGIN.name)
    app.teardown_appcontext(_release)
    # The requests' connections (API_POOL_SIZE, no overflow): the transactions a worker runs at once are bounded, since
    # more of them than the database has cores make each one cost Postgres more (issue 14: with 8 per worker instead
    # of 2, the audited page cost Postgres 790-820 µs instead of 520-550). A request waits up to API_POOL_TIMEOUT_SECONDS
    # for one, then is answered 503 (backend/errors.py). CSV downloads stream from connections of their own, one per
    # download slot (API_CSV_STREAMS), so a long export never holds one a page is waiting for.
    app.extensions["engine"] = _engine(settings, options, settings.pool_size)
    app.extensions["export_engine"] = _engine(settings, options, settings.csv_streams)


def _engine(settings: ApiSettings, options: str, connections: int) -> Engine:
    return create_engine(
        settings.sqlalchemy_url(),
        pool_size=connections,
        max_overflow=0,
        pool_timeout=settings.pool_timeout_seconds,
        # No ping before each use (a round trip per request): the list endpoints run their transaction through
        # run(), which tries once more on a new connection when a pooled one turns out dead; elsewhere SQLAlchemy
        # closes the pool's connections on the first disconnect it sees, and that one call fails.
        pool_pre_ping=False,
        # A failed statement's parameters (a patient id, a name) never reach an exception message or a log line.
        hide_parameters=True,
        # A request's reads share one snapshot: its page, total and as_of describe the same build of a mart.
        isolation_level="REPEATABLE READ",
        connect_args={
            "options": options,
            "application_name": "health-api",
            "connect_timeout": 5,
        },
    )


def engine() -> Engine:
    return current_app.extensions["engine"]


def export_engine() -> Engine:
    """The CSV downloads' own connections (API_CSV_STREAMS per worker)."""
    return current_app.extensions["export_engine"]


def connection() -> Connection:
    """This request's connection: checked out of the pool once, on first use, and returned when the request
    ends, so the key check, the audit row and the page share it."""
    if "db" not in g:
        g.db = engine().connect()
    return g.db


class ConnectionLost(psycopg.OperationalError):
    """The pooled connection turned out to be dead (the server restarted, the link dropped while it sat idle)."""


# The transaction control a list endpoint's pipeline carries itself (the connection is in autocommit for the block, so
# psycopg adds no BEGIN, COMMIT or extra sync of its own: about 70 µs less of the API's CPU per page, and one round trip
# less, than letting psycopg run the transaction; issue 14, docs/decisions/0014).
BEGIN = {False: b"begin isolation level repeatable read read only",
         True: b"begin isolation level repeatable read read write"}


@contextmanager
def transaction(*, read_write: bool = False) -> Iterator[psycopg.Connection]:
    """This request's pooled connection as psycopg sees it, in pipeline mode, for one REPEATABLE READ transaction:
    read only like every API transaction, or read write when asked (the audit row). BEGIN, the caller's statements
    and COMMIT are queued, not sent, until a result is fetched or the block ends, so a caller that fetches nothing
    inside the block gets them all through in one round trip, and reads each cursor's rows after it: a row is never
    read before the COMMIT (and with it the audit row) succeeded. The COMMIT is also what ends a read-only
    transaction: unlike ROLLBACK it keeps the statements psycopg has prepared on the connection. On an error the
    transaction is rolled back; a connection that broke leaves the pool, and the error is then a ConnectionLost."""
    pooled = connection()
    conn: psycopg.Connection = pooled.connection.driver_connection
    conn.autocommit = True  # the block sends its own BEGIN and COMMIT (SQLAlchemy's own use of the connection does not)
    try:
        with conn.pipeline():
            conn.execute(BEGIN[read_write], prepare=False)
            yield conn
            conn.execute(b"commit", prepare=False)
    except BaseException as exc:
        if not _rolled_back(conn):
            g.pop("db", None)
            pooled.invalidate()
            pooled.close()
            if isinstance(exc, psycopg.OperationalError):
                raise ConnectionLost(str(exc).strip().splitlines()[0] if str(exc).strip() else "") from exc
        raise
    finally:
        if not pooled.invalidated and not conn.closed:
            conn.autocommit = False


def run(work: Callable[[psycopg.Connection], T], *, read_write: bool = False) -> T:
    """`work(conn)` in a transaction() (queue statements, return cursors). The pool's connections are not pinged
    before use (a round trip per request): a dead one is found by the work itself, and then the pool's idle
    connections, likely dead alike, are closed and the work runs once more on a new connection. (An audit row may
    then be written twice, never not at all.)"""
    try:
        with transaction(read_write=read_write) as conn:
            return work(conn)
    except ConnectionLost:
        log.warning("a pooled connection to the warehouse was dead; the pool's idle connections are closed and the "
                    "request is tried once more on a new one")
        engine().dispose()
    with transaction(read_write=read_write) as conn:
        return work(conn)


def _rolled_back(conn: psycopg.Connection) -> bool:
    """Roll back; False when the connection is lost (broken, or the rollback itself failed)."""
    if conn.broken or conn.closed:
        return False
    try:
        conn.rollback()
    except psycopg.Error:
        return False
    return True


def _release(_exc: BaseException | None) -> None:
    conn = g.pop("db", None)
    if conn is not None:
        conn.close()
