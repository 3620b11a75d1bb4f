"""The pooled SQLAlchemy engine, attached to the app. Views run parameterized SQL on published marts.

It logs in as the API's own login (`health_api`, API_DB_PASSWORD: backend/config.py), a member of `api_reader`
only, so that nothing which reaches SQL through the API can write data or become another role: `RESET ROLE`
on its connection leaves `health_api`, with `api_reader`'s rights and no more (tests/backend/test_db_logins.py).
"""

from __future__ import annotations

import logging
from urllib.parse import unquote, urlsplit

from flask import Flask, current_app, g
from sqlalchemy import Connection, Engine, create_engine

from backend.config import ApiSettings
from elt.warehouse.roles import API_LOGIN

log = logging.getLogger(__name__)


def init_app(app: Flask, settings: ApiSettings) -> None:
    # Every connection: a statement timeout, read only unless a transaction says otherwise (the audit trail),
    # and the api_reader role, which may read the published marts and nothing raw.
    options = f"-c statement_timeout={settings.statement_timeout_ms} -c default_transaction_read_only=on"
    if settings.db_role:
        options += f" -c role={settings.db_role}"
    if settings.db_password is None or not settings.db_password.get_secret_value():
        log.warning("%s is not set: the API logs in as %r, the user of its database URL, rather than as its own "
                    "login %s; make sure that user is not the warehouse owner or a superuser (docs/operations.md, "
                    "Security)", API_LOGIN.password_variable, unquote(urlsplit(settings.database_url).username or ""),
                    API_LOGIN.name)
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
