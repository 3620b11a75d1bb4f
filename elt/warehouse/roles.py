"""The warehouse's group roles and what each may read or write, re-applied on every start.

Applications and people log in as their own users and are granted one of these NOLOGIN roles:

| role | may |
|---|---|
| `warehouse_loader` | write raw tables and the ops ledger (the `elt` loader); read reject values |
| `warehouse_transformer` | read raw views and the ledger (dbt); it creates the marts it owns |
| `api_reader` | read core, clinical and analytics marts, the ledger, and rejects without their values; check API keys and append to the API's audit trail and its record of the runs drops started |
| `bi_reader` | read the de-identified analytics marts only |

Reject values (`ops.load_rejects.raw_value`) may be personal data: only the loader role (and the
owner) can read them. dbt re-grants select on each mart it builds (`+grants` in dbt_project.yml) and
usage on its schemas (the `grant_schema_usage` on-run-end hook).
"""

from __future__ import annotations

import logging

import psycopg
from psycopg import errors, sql

log = logging.getLogger(__name__)

LOADER, TRANSFORMER, API_READER, BI_READER = "warehouse_loader", "warehouse_transformer", "api_reader", "bi_reader"
ROLES = (LOADER, TRANSFORMER, API_READER, BI_READER)
REJECT_COLUMNS_WITHOUT_VALUES = ("reject_id", "file_id", "row_number", "column_name", "rule", "message")


def _ensure_role(conn: psycopg.Connection, role: str) -> bool:
    if conn.execute("select 1 from pg_roles where rolname = %s", (role,)).fetchone():
        return True
    try:
        with conn.transaction():
            conn.execute(sql.SQL("create role {} nologin").format(sql.Identifier(role)))
        return True
    except errors.InsufficientPrivilege:
        log.warning("role %s does not exist and this user may not create it; ask a database admin to run "
                    "`create role %s nologin`, then restart", role, role)
        return False


def apply_grants(conn: psycopg.Connection, raw_schemas: set[str]) -> None:
    """Create the group roles if missing and grant them what the table above says. Idempotent."""
    present = {role for role in ROLES if _ensure_role(conn, role)}
    ident = sql.Identifier
    raw = sql.SQL(", ").join(ident(s) for s in sorted(raw_schemas | {"raw"}))
    statements: list[tuple[str, sql.Composable]] = [
        (LOADER, sql.SQL("grant usage, create on schema {}, ops to {}").format(raw, ident(LOADER))),
        (LOADER, sql.SQL("grant select, insert, update, delete on all tables in schema {}, ops to {}").format(raw, ident(LOADER))),
        # setval() on each raw table's row-number identity
        (LOADER, sql.SQL("grant usage, select, update on all sequences in schema {}, ops to {}").format(raw, ident(LOADER))),
        (TRANSFORMER, sql.SQL("grant usage on schema {}, ops to {}").format(raw, ident(TRANSFORMER))),
        (TRANSFORMER, sql.SQL("grant select on all tables in schema {} to {}").format(raw, ident(TRANSFORMER))),
        (TRANSFORMER, sql.SQL("grant select on ops.file_ledger to {}").format(ident(TRANSFORMER))),
        (API_READER, sql.SQL("grant usage on schema ops to {}").format(ident(API_READER))),
        (API_READER, sql.SQL("grant select on ops.file_ledger, ops.pipeline_runs to {}").format(ident(API_READER))),
        (API_READER, sql.SQL("grant select (key_id, role, key_hash, revoked_at) on ops.api_keys to {}").format(
            ident(API_READER))),
        (API_READER, sql.SQL("grant insert on ops.api_audit to {}").format(ident(API_READER))),
        # the runs a drop started, and whose key started them (GET /api/v1/runs/<id>)
        (API_READER, sql.SQL("grant select, insert on ops.api_runs to {}").format(ident(API_READER))),
    ]
    for role in (TRANSFORMER, API_READER):
        statements.append((role, sql.SQL("grant select ({}) on ops.load_rejects to {}").format(
            sql.SQL(", ").join(map(ident, REJECT_COLUMNS_WITHOUT_VALUES)), ident(role))))
    for role, statement in statements:
        if role in present:
            conn.execute(statement)
