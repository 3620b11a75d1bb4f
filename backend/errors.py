"""One JSON error envelope for every error: {"error": {"status", "code", "message"}}. No SQL, no traces."""

from __future__ import annotations

import logging
import traceback

import psycopg
from flask import Flask, current_app, jsonify, request
from psycopg import errors
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None, **details):
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details
        self.headers = headers or {}


def envelope(status: int, code: str, message: str, **details):
    body = {"error": {"status": status, "code": code, "message": message, **details}}
    return jsonify(body), status


def not_built_message() -> str:
    """What to do about a mart that is not built yet: wait for its first file, or do what its family's resource
    modules say (the app's catalogue, backend/api/catalogue.py: the bed marts come with a KH03 workbook)."""
    catalogue = current_app.extensions.get("catalogue")
    hints = "; ".join(catalogue.not_built_hints) if catalogue else ""
    return ("The mart behind this endpoint has not been built yet: it appears after its first file loads"
            + (f" ({hints})" if hints else "") + ". GET /ready lists every mart and when it was built.")


def init_app(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        body, status = envelope(exc.status, exc.code, exc.message, **exc.details)
        return body, status, exc.headers

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        code = (exc.name or "error").lower().replace(" ", "_")
        return envelope(exc.code or 500, code, exc.description or exc.name)

    # The list endpoints talk to psycopg directly (backend/db.py: transaction()), the rest through SQLAlchemy, which
    # wraps psycopg's errors (`orig`): each error below is handled the same whichever way it came.
    @app.errorhandler(OperationalError)
    @app.errorhandler(psycopg.OperationalError)
    def _database_error(exc: Exception):
        # Only the error's class and Postgres's own one-line reason: never the SQL, its parameters or a trace.
        orig = getattr(exc, "orig", exc)
        reason = (str(orig).strip().splitlines() or [""])[0] if isinstance(orig, psycopg.Error) else ""
        if isinstance(orig, errors.QueryCanceled):
            log.warning("query cancelled by the statement timeout on %s", request.path)
            return envelope(503, "query_timeout", "The query took longer than the API allows; narrow the filters "
                            "(a date range, a facility) or page with a smaller limit.")
        log.error("database error on %s: %s: %s", request.path, type(orig).__name__, reason)
        return envelope(503, "database_unavailable", "The warehouse database did not answer; try again shortly.")

    @app.errorhandler(PoolTimeout)
    def _pool_exhausted(_exc: PoolTimeout):
        log.warning("no warehouse connection came free within API_POOL_TIMEOUT_SECONDS on %s (API_POOL_SIZE all in "
                    "use)", request.path)
        body, status = envelope(503, "database_busy", "Every connection of this server to the warehouse stayed busy "
                                "for longer than a request waits; try again shortly.")
        return body, status, {"Retry-After": "5"}

    @app.errorhandler(ProgrammingError)
    @app.errorhandler(psycopg.ProgrammingError)
    def _programming_error(exc: Exception):
        if isinstance(getattr(exc, "orig", exc), errors.UndefinedTable):
            log.warning("%s reads a mart that has not been built yet", request.path)
            return envelope(503, "not_built", not_built_message())
        return _unexpected(exc)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        # The class and where, for the operator; not the message or the trace (a database error's message can
        # carry the statement and a row's values).
        where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
        log.error("unhandled %s on %s %s (raised at %s:%s in %s)", type(exc).__name__, request.method, request.path,
                  where and where.filename, where and where.lineno, where and where.name)
        return envelope(500, "internal_error", "The server hit an unexpected error; it has been logged.")
