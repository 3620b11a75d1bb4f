"""Who may call what: API keys with roles, and the audit trail of every patient-level read.

A key looks like `hwk_<key_id>_<secret>`. `ops.api_keys` keeps only its sha256, so a copy of the database
gives no working key; the key is printed once, when it is created:

    ./start.sh api-key create --name "Ward 3 app" --role clinician
    ./start.sh api-key list
    ./start.sh api-key revoke 3

Requests send `Authorization: Bearer <key>` (or `X-API-Key: <key>`). Roles nest, each seeing what the one
before it sees: `analyst` (de-identified marts and bed occupancy), `clinician` (also the patient-level
endpoints, every read of which is written to `ops.api_audit` before any row is served), `admin` (also the
file ledger, GET /api/v1/drops, and every run). Which role may drop a file of a drop type is declared in its
contract (`drop_role`, `revision_role`: elt/contracts); a run is shown to the key that started it and to admins.

A key found valid is remembered by the API process for API_KEY_CACHE_SECONDS (default 5), so that a client
making many calls costs one key lookup per that interval, not one per call: a revoked key is refused by every
process within that many seconds of `api-key revoke`. Keys that fail are never remembered.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import secrets
from dataclasses import dataclass

import click
import psycopg
from flask import Flask, current_app, g, request

from backend.cache import TtlCache
from backend.db import run
from backend.errors import ApiError
from elt.contracts import ROLES
from elt.warehouse.audit import AUDIT_SQL

log = logging.getLogger(__name__)

_RANK = {role: rank for rank, role in enumerate(ROLES)}
_KEY = re.compile(r"hwk_(\d{1,18})_([A-Za-z0-9_-]{32,128})")
HOW_TO_GET_A_KEY = "create one with `./start.sh api-key create --name NAME --role analyst|clinician|admin`"


@dataclass(frozen=True)
class Caller:
    key_id: int
    role: str


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def presented_key() -> str | None:
    """The key the request sends (Authorization: Bearer, or X-API-Key), if any. (Read from the WSGI environ, where
    request.headers reads them too: every call makes this check, most of all a 304's.)"""
    environ = request.environ
    header = environ.get("HTTP_AUTHORIZATION", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip()
    return environ.get("HTTP_X_API_KEY", "").strip() or None


def authenticate() -> Caller:
    """The caller of this request, from its key; 401 without a valid, unrevoked one."""
    key = presented_key()
    if not key:
        raise ApiError(401, "unauthorized", f"this endpoint needs an API key: send `Authorization: Bearer <key>`; "
                                            f"{HOW_TO_GET_A_KEY}")
    digest = key_hash(key)
    cache: TtlCache = current_app.extensions["key_cache"]
    caller = cache.get(digest)
    if caller is not None:
        return caller
    match = _KEY.fullmatch(key)
    row, asked_at = None, cache.clock()  # what the row says was true when the lookup began
    if match:
        row = run(lambda conn: conn.execute("select role, key_hash, revoked_at from ops.api_keys where key_id = %s",
                                            (int(match.group(1)),))).fetchone()
    if row is None or row[2] is not None or not hmac.compare_digest(row[1], digest):
        raise ApiError(401, "unauthorized", f"the API key is not valid or has been revoked; {HOW_TO_GET_A_KEY}")
    caller = Caller(int(match.group(1)), row[0])
    cache.put(digest, caller, asked_at)
    return caller


def has_role(caller: Caller, role: str) -> bool:
    """True when the caller's role is `role` or above (roles nest)."""
    return _RANK[caller.role] >= _RANK[role]


def require(role: str) -> Caller:
    """The authenticated caller, if its role is `role` or above; 403 otherwise."""
    caller = g.get("caller") or authenticate()
    g.caller = caller
    if not has_role(caller, role):
        raise ApiError(403, "forbidden", f"this endpoint needs the {role} role (or above); this key has {caller.role}")
    return caller




def audit_params(caller: Caller) -> dict:
    """The audit row of this request (AUDIT_SQL's parameters): who, which endpoint, which parameters, from where."""
    params = {name: request.args.getlist(name) for name in request.args}
    return {"key_id": caller.key_id, "role": caller.role, "method": request.method, "endpoint": request.path,
            "params": json.dumps(params), "remote_addr": request.remote_addr}


def audit(caller: Caller) -> None:
    """Write who reads what, committed before the rows are read: a read that cannot be audited is not served. (A
    JSON page writes the row in the same transaction as its read instead: backend/api/listing.py.)"""
    params = audit_params(caller)
    run(lambda conn: conn.execute(AUDIT_SQL, params), read_write=True)


# --- key administration (a CLI: an operator's shell, with the warehouse owner's credentials) ------------------
def create_key(database_url: str, name: str, role: str) -> str:
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    secret = secrets.token_urlsafe(32)
    with psycopg.connect(database_url) as conn:
        key_id = conn.execute("insert into ops.api_keys (name, role, key_hash) values (%s, %s, '') returning key_id",
                              (name, role)).fetchone()[0]
        key = f"hwk_{key_id}_{secret}"
        conn.execute("update ops.api_keys set key_hash = %s where key_id = %s", (key_hash(key), key_id))
    return key


def init_app(app: Flask, key_cache_seconds: float) -> None:
    app.extensions["key_cache"] = TtlCache(key_cache_seconds)

    @app.cli.group("api-key", help="Create, list and revoke API keys (run with the warehouse owner's DATABASE_URL).")
    def api_key() -> None:
        pass

    def url() -> str:
        return current_app.config["API_SETTINGS"].database_url

    @api_key.command("create")
    @click.option("--name", required=True, help="Who or what the key is for.")
    @click.option("--role", required=True, type=click.Choice(ROLES))
    def create(name: str, role: str) -> None:
        key = create_key(url(), name, role)
        article = "an" if role[0] in "aeiou" else "a"
        click.echo(f"created {article} {role} key for {name!r}. It is shown this once; store it now:\n{key}")

    @api_key.command("list")
    def list_keys() -> None:
        with psycopg.connect(url()) as conn:
            rows = conn.execute("select key_id, name, role, created_at, revoked_at from ops.api_keys order by key_id")
            for key_id, name, role, created, revoked in rows:
                state = f"revoked {revoked:%Y-%m-%d %H:%M}" if revoked else "active"
                click.echo(f"{key_id:>5}  {role:<9}  {state:<24}  created {created:%Y-%m-%d %H:%M}  {name}")

    @api_key.command("revoke")
    @click.argument("key_id", type=int)
    def revoke(key_id: int) -> None:
        with psycopg.connect(url()) as conn:
            done = conn.execute("update ops.api_keys set revoked_at = now() where key_id = %s and revoked_at is null",
                                (key_id,)).rowcount
        click.echo(f"revoked key {key_id}" if done else f"no active key {key_id}")
        if not done:
            raise SystemExit(1)
