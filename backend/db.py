"""The pooled SQLAlchemy engine, attached to the app. Views run parameterized SQL on published marts."""

from __future__ import annotations

from flask import Flask, current_app
from sqlalchemy import Engine, create_engine

from backend.config import ApiSettings


def init_app(app: Flask, settings: ApiSettings) -> None:
    # Every connection: a statement timeout, read only unless a transaction says otherwise (the audit trail),
    # and the api_reader role, which may read the published marts and nothing raw.
    options = f"-c statement_timeout={settings.statement_timeout_ms} -c default_transaction_read_only=on"
    if settings.db_role:
        options += f" -c role={settings.db_role}"
    app.extensions["engine"] = create_engine(
        settings.sqlalchemy_url(),
        pool_size=settings.pool_size,
        pool_pre_ping=True,
        # A failed statement's parameters (a patient id, a name) never reach an exception message or a log line.
        hide_parameters=True,
        connect_args={
            "options": options,
            "application_name": "health-api",
            "connect_timeout": 5,
        },
    )


def engine() -> Engine:
    return current_app.extensions["engine"]
