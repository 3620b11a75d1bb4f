"""One JSON error envelope for every error: {"error": {"status", "code", "message"}}. No SQL, no traces."""

from __future__ import annotations

import logging

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, **details):
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details


def envelope(status: int, code: str, message: str, **details):
    body = {"error": {"status": status, "code": code, "message": message, **details}}
    return jsonify(body), status


def init_app(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        return envelope(exc.status, exc.code, exc.message, **exc.details)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        code = (exc.name or "error").lower().replace(" ", "_")
        return envelope(exc.code or 500, code, exc.description or exc.name)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error")  # the trace goes to the server log only
        return envelope(500, "internal_error", "The server hit an unexpected error; it has been logged.")
