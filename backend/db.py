"""The pooled SQLAlchemy engine, attached to the app. Views run parameterized SQL on published marts."""

from __future__ import annotations

from flask import Flask, current_app, g
from sqlalchemy import Connection, Engine, create_engine

from backend.config import ApiSettings


def init_app(app: Flask, settings: ApiSettings) -> None:
    # Every connection: a statement timeout, read only unless a transaction says otherwise (the audit trail),
    # and the api_reader role, which may read the published marts and nothing raw.
    options = f"-c statement_timeout={settings.statement_timeout_ms} -c default_transaction_read_only=on"
    if settings.db_role:
        options += f" -c role={settings.db_role}"
    app.teardown_appcontext(_release)
    app.extensions["engine"] = create_engine(
        settings.sqlalchemy_url(),
        pool_size=settings.pool_size,
        pool_pre_ping=True,
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


def connection() -> Connection:
    """This request's connection: checked out of the pool once, on first use, and returned when the request
    ends, so the key check, the audit row and the page share it."""
    if "db" not in g:
        g.db = engine().connect()
    return g.db


def _release(_exc: BaseException | None) -> None:
    conn = g.pop("db", None)
    if conn is not None:
        conn.close()
