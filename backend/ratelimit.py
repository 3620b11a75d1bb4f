"""Rate limits per API key on every /api/v1 endpoint (flask-limiter), so one runaway script cannot starve the
others. A request is counted against the key it presents (a sha256 of it: an invalid key gets a bucket of
its own and cannot spend a real key's), or against its address when it presents none. Over the limit: a 429
in the usual envelope, with Retry-After and X-RateLimit-* headers.

Counters live in each API process's memory (`API_RATE_LIMIT_STORAGE=memory://`), so with N gunicorn
workers a key may make up to N times the limit; point it at a shared store (e.g. `redis://...`) for one
limit across workers and hosts.
"""

from __future__ import annotations

import hashlib

from flask import Blueprint, Flask, request
from flask_limiter import Limiter

from backend.auth import presented_key
from backend.config import ApiSettings


def _caller() -> str:
    key = presented_key()
    if key:
        return "key:" + hashlib.sha256(key.encode()).hexdigest()
    return "addr:" + (request.remote_addr or "unknown")


def init_app(app: Flask, settings: ApiSettings, blueprints: list[Blueprint]) -> Limiter:
    limiter = Limiter(_caller, app=app, storage_uri=settings.rate_limit_storage, headers_enabled=True,
                      enabled=bool(settings.rate_limit))
    if settings.rate_limit:
        for blueprint in blueprints:
            limiter.limit(settings.rate_limit)(blueprint)
    return limiter
