"""Rate limits on every /api/v1 endpoint (flask-limiter), so one runaway script cannot starve the others.

* Per key (API_RATE_LIMIT): a request is counted against the key it presents (a sha256 of it: an invalid key
  gets a bucket of its own and cannot spend a real key's), or against its address when it presents none.
* Per address, failed authentications only (API_AUTH_FAILURE_LIMIT): every 401 is counted against the client
  address, in one counter across all endpoints. Random keys each have a bucket of their own above, so without
  this a client trying keys would never be limited. Once over, every request from that address is a 429 until
  the window passes (without a key lookup); requests with valid keys never count.

Over a limit: a 429 in the usual envelope, with Retry-After and X-RateLimit-* headers.

Counters live in each API process's memory (`API_RATE_LIMIT_STORAGE=memory://`), so with N granian
workers a key may make up to N times the limit; point it at a shared store (e.g. `redis://...`) for one
limit across workers and hosts. The address is the TCP peer's: behind a reverse proxy, every client has the
proxy's address unless the proxy's X-Forwarded-For is trusted (werkzeug's ProxyFix, not configured here).
"""

from __future__ import annotations

import hashlib

from flask import Blueprint, Flask, Response, request
from flask_limiter import Limiter

from backend.auth import presented_key
from backend.config import ApiSettings


def _caller() -> str:
    key = presented_key()
    if key:
        return "key:" + hashlib.sha256(key.encode()).hexdigest()
    return _address()


def _address() -> str:
    return "addr:" + (request.remote_addr or "unknown")


def _failed_authentication(response: Response) -> bool:
    return response.status_code == 401


def init_app(app: Flask, settings: ApiSettings, blueprints: list[Blueprint]) -> Limiter:
    limiter = Limiter(_caller, app=app, storage_uri=settings.rate_limit_storage, headers_enabled=True,
                      enabled=bool(settings.rate_limit or settings.auth_failure_limit))
    if settings.auth_failure_limit:
        # Shared: one counter per address across every endpoint; deducted only after a response that is a 401.
        failures = limiter.shared_limit(
            settings.auth_failure_limit, scope="failed-authentication", key_func=_address,
            deduct_when=_failed_authentication,
            error_message=f"too many failed authentications from this address (API_AUTH_FAILURE_LIMIT: "
                          f"{settings.auth_failure_limit}); wait for Retry-After, then send a valid key")
    for blueprint in blueprints:
        if settings.rate_limit:
            limiter.limit(settings.rate_limit)(blueprint)
        if settings.auth_failure_limit:
            failures(blueprint)
    return limiter
