"""The warehouse's group roles, what each may read or write, and the project's own logins; re-applied on every
start (`elt init-db`, `elt ingest`, the DAGs' first task).

Group roles (NOLOGIN): people and applications log in as their own users and are granted one of these.

| role | may |
|---|---|
| `warehouse_loader` | write raw tables and the ops ledger (the `elt` loader); read reject values |
| `warehouse_transformer` | read raw views and the ledger (dbt); it creates the marts it owns |
| `api_reader` | read core, clinical and analytics marts, the ledger, and rejects without their values; check API keys and append to the API's audit trail and its record of the runs drops started |
| `drop_registrar` | register a dropped file in the ledger: insert a `discovered` row (the columns of `ledger.register`) and nothing else |
| `bi_reader` | read the de-identified analytics marts only |

Logins (`LOGINS`): the API and BI tools never log in as the warehouse owner. Each login is a member of exactly
its groups (any other membership is revoked) and is never a superuser, never creates roles or databases,
never replicates or bypasses row security. Its password comes from configuration (`Settings`, one variable
per login) and is sent to the server as a SCRAM verifier, so the password itself never appears in a
statement or a server log. A login whose password is not configured is left as it is (created and managed by
a database admin), or not created.

Reject values (`ops.load_rejects.raw_value`) may be personal data: only the loader role (and the
owner) can read them. dbt re-grants select on each mart it builds (`+grants` in dbt_project.yml) and
usage on its schemas (the `grant_schema_usage` on-run-end hook).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
from collections.abc import Mapping
from dataclasses import dataclass

import psycopg
from psycopg import errors, sql

from elt.warehouse.ledger import REGISTER_RETURNS, REGISTER_UPDATES, REGISTERED_COLUMNS

log = logging.getLogger(__name__)

LOADER, TRANSFORMER, API_READER, BI_READER = "warehouse_loader", "warehouse_transformer", "api_reader", "bi_reader"
DROP_REGISTRAR = "drop_registrar"
ROLES = (LOADER, TRANSFORMER, API_READER, DROP_REGISTRAR, BI_READER)
REJECT_COLUMNS_WITHOUT_VALUES = ("reject_id", "file_id", "row_number", "column_name", "rule", "message")


@dataclass(frozen=True)
class Login:
    """A LOGIN role the project creates and keeps in shape."""

    name: str
    groups: tuple[str, ...]
    password_setting: str  # the elt Settings field with its password; its environment variable is the upper case
    used_by: str

    @property
    def password_variable(self) -> str:
        return self.password_setting.upper()


API_LOGIN = Login("health_api", (API_READER,), "api_db_password", "the API's reads and its audit rows (backend/db.py)")
DROPS_LOGIN = Login("health_api_drops", (DROP_REGISTRAR,), "api_drops_db_password",
                    "the API registering a dropped file in the ledger (POST /api/v1/drops)")
BI_LOGIN = Login("health_bi", (BI_READER,), "bi_db_password", "BI tools (Metabase, Power BI, Tableau, Superset)")
LOGINS = (API_LOGIN, DROPS_LOGIN, BI_LOGIN)
# What a project login may never do, as CREATE/ALTER ROLE options, and the pg_roles flags that must then be false.
LOGIN_OPTIONS = "login inherit nosuperuser nocreatedb nocreaterole noreplication nobypassrls"
_POWERS = "rolsuper or rolcreatedb or rolcreaterole or rolreplication or rolbypassrls or not rolcanlogin or not rolinherit"


def _ensure_role(conn: psycopg.Connection, role: str) -> bool:
    if conn.execute("select 1 from pg_roles where rolname = %s", (role,)).fetchone():
        return True
    try:
        with conn.transaction():
            conn.execute(sql.SQL("create role {} nologin").format(sql.Identifier(role)))
        return True
    except errors.DuplicateObject:  # another start created it meanwhile (roles are shared by the whole server)
        return True
    except errors.InsufficientPrivilege:
        log.warning("role %s does not exist and this user may not create it; ask a database admin to run "
                    "`create role %s nologin`, then restart", role, role)
        return False


def _grant_statements(raw_schemas: set[str]) -> list[tuple[str, sql.Composable]]:
    ident = sql.Identifier
    raw = sql.SQL(", ").join(ident(s) for s in sorted(raw_schemas | {"raw"}))

    def columns(names: tuple[str, ...]) -> sql.Composable:
        return sql.SQL(", ").join(map(ident, names))

    statements: list[tuple[str, sql.Composable]] = [
        (LOADER, sql.SQL("grant usage, create on schema {}, ops to {}").format(raw, ident(LOADER))),
        (LOADER, sql.SQL("grant select, insert, update, delete on all tables in schema {}, ops to {}").format(raw, ident(LOADER))),
        # setval() on each raw table's row-number identity
        (LOADER, sql.SQL("grant usage, select, update on all sequences in schema {}, ops to {}").format(raw, ident(LOADER))),
        (TRANSFORMER, sql.SQL("grant usage on schema {}, ops to {}").format(raw, ident(TRANSFORMER))),
        (TRANSFORMER, sql.SQL("grant select on all tables in schema {} to {}").format(raw, ident(TRANSFORMER))),
        (TRANSFORMER, sql.SQL("grant select on ops.file_ledger to {}").format(ident(TRANSFORMER))),
        (API_READER, sql.SQL("grant usage on schema ops to {}").format(ident(API_READER))),
        (API_READER, sql.SQL("grant select on ops.file_ledger, ops.pipeline_runs, ops.connector_runs to {}").format(
            ident(API_READER))),
        (API_READER, sql.SQL("grant select (key_id, role, key_hash, revoked_at) on ops.api_keys to {}").format(
            ident(API_READER))),
        (API_READER, sql.SQL("grant insert on ops.api_audit to {}").format(ident(API_READER))),
        # `insert ... on conflict (bucket, key, etag) do update ... returning`: Postgres wants select on the
        # conflict columns and the updated ones too. No status, sha256, error or counts: a registered row is
        # always `discovered`, and only the loader moves it on.
        (DROP_REGISTRAR, sql.SQL("grant usage on schema ops to {}").format(ident(DROP_REGISTRAR))),
        (DROP_REGISTRAR, sql.SQL("grant insert ({}) on ops.file_ledger to {}").format(
            columns(REGISTERED_COLUMNS), ident(DROP_REGISTRAR))),
        (DROP_REGISTRAR, sql.SQL("grant update ({}) on ops.file_ledger to {}").format(
            columns(REGISTER_UPDATES), ident(DROP_REGISTRAR))),
        (DROP_REGISTRAR, sql.SQL("grant select ({}) on ops.file_ledger to {}").format(
            columns(REGISTERED_COLUMNS + REGISTER_RETURNS), ident(DROP_REGISTRAR))),
        # the runs a drop started, and whose key started them (GET /api/v1/runs/<id>)
        (API_READER, sql.SQL("grant select, insert on ops.api_runs to {}").format(ident(API_READER))),
    ]
    for role in (TRANSFORMER, API_READER):
        statements.append((role, sql.SQL("grant select ({}) on ops.load_rejects to {}").format(
            columns(REJECT_COLUMNS_WITHOUT_VALUES), ident(role))))
    return statements


def apply_grants(conn: psycopg.Connection, raw_schemas: set[str], passwords: Mapping[str, str | None] | None = None) -> None:
    """Create the group roles if missing and grant them what the table above says; then the logins (`passwords`:
    login name -> configured password or None). Idempotent."""
    present = {role for role in ROLES if _ensure_role(conn, role)}
    for role, statement in _grant_statements(raw_schemas):
        if role in present:
            conn.execute(statement)
    ensure_logins(conn, passwords or {}, present)


def login_passwords(settings) -> dict[str, str | None]:
    """Login name -> its configured password (None when unset), from the ELT's settings."""
    secrets = {login.name: getattr(settings, login.password_setting) for login in LOGINS}
    return {name: secret.get_secret_value() if secret else None for name, secret in secrets.items()}


def ensure_logins(conn: psycopg.Connection, passwords: Mapping[str, str | None], groups: set[str]) -> None:
    """Create each project login that has a password configured, and keep every existing one in shape: no
    powers, member of its groups only, its password the configured one."""
    for login in LOGINS:
        password = passwords.get(login.name)
        try:
            with conn.transaction():
                if _ensure_login(conn, login, password):
                    _set_memberships(conn, login, groups)
        except errors.InsufficientPrivilege:
            log.warning("this database user may not manage the login %s (it needs CREATEROLE); ask a database "
                        "admin to create it with `create role %s login password '...' in role %s`",
                        login.name, login.name, ", ".join(login.groups))


def _ensure_login(conn: psycopg.Connection, login: Login, password: str | None) -> bool:
    """False when the login does not exist and has no password to be created with."""
    name = sql.Identifier(login.name)
    row = conn.execute(sql.SQL("select {} from pg_roles where rolname = %s").format(sql.SQL(_POWERS)),  # noqa: S608
                       (login.name,)).fetchone()
    if row is None:
        if not password:
            log.info("login %s (%s) not created: %s is not set", login.name, login.used_by, login.password_variable)
            return False
        try:
            with conn.transaction():
                conn.execute(sql.SQL("create role {} " + LOGIN_OPTIONS + " password {}").format(
                    name, sql.Literal(_verifier(conn, login.name, password))))
            log.info("created login %s for %s", login.name, login.used_by)
            return True
        except errors.DuplicateObject:  # created meanwhile by another start: correct it as an existing one
            row = (True,)
    if row[0]:
        conn.execute(sql.SQL("alter role {} " + LOGIN_OPTIONS).format(name))
    if password and not _password_is(conn, login.name, password):
        conn.execute(sql.SQL("alter role {} password {}").format(name, sql.Literal(_verifier(conn, login.name, password))))
        log.info("set the password of login %s from %s", login.name, login.password_variable)
    return True


def _set_memberships(conn: psycopg.Connection, login: Login, groups: set[str]) -> None:
    name = sql.Identifier(login.name)
    # Since Postgres 16 one membership may be granted several times, by different grantors: each is revoked.
    grants = conn.execute(
        "select granted.rolname, grantor.rolname from pg_auth_members as membership "
        "join pg_roles as granted on granted.oid = membership.roleid "
        "join pg_roles as grantor on grantor.oid = membership.grantor "
        "join pg_roles as member on member.oid = membership.member where member.rolname = %s "
        "order by 1, 2", (login.name,)).fetchall()
    for group in sorted(set(login.groups) & groups - {group for group, _ in grants}):
        conn.execute(sql.SQL("grant {} to {}").format(sql.Identifier(group), name))
    for group, grantor in grants:
        if group not in login.groups:
            log.warning("login %s was made a member of %s by %s; revoking it (it may be a member of %s only)",
                        login.name, group, grantor, ", ".join(login.groups))
            conn.execute(sql.SQL("revoke {} from {} granted by {}").format(
                sql.Identifier(group), name, sql.Identifier(grantor)))


def _verifier(conn: psycopg.Connection, user: str, password: str) -> str:
    """The SCRAM-SHA-256 verifier of `password`, computed by libpq on this side (as psql's \\password does)."""
    return conn.pgconn.encrypt_password(password.encode(), user.encode(), b"scram-sha-256").decode()


def _password_is(conn: psycopg.Connection, user: str, password: str) -> bool:
    """Whether the stored verifier is `password`'s. Only a superuser may read it; anyone else sets it again."""
    try:
        with conn.transaction():
            row = conn.execute("select rolpassword from pg_authid where rolname = %s", (user,)).fetchone()
    except errors.InsufficientPrivilege:
        return False
    stored = row[0] if row else None
    if not stored or not stored.startswith("SCRAM-SHA-256$"):
        return False
    try:
        iterations, salt, stored_key = _scram_parts(stored)
    except ValueError:
        return False
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    return hmac.compare_digest(hashlib.sha256(client_key).digest(), stored_key)


def _scram_parts(verifier: str) -> tuple[int, bytes, bytes]:
    """`SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` (base64) -> iterations, salt, StoredKey."""
    params, keys = verifier.split("$", 1)[1].split("$")
    iterations, salt = params.split(":")
    return int(iterations), base64.b64decode(salt), base64.b64decode(keys.split(":")[0])
