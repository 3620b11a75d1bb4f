"""Creates the ops schema and one raw table per contract. Idempotent; safe to run on every start."""

from __future__ import annotations

from importlib import resources

import psycopg
from psycopg import sql

from elt.contracts import Contract

LINEAGE_COLUMNS = ("_file_id", "_row_number", "_loaded_at")


def apply_ops_schema(conn: psycopg.Connection) -> None:
    for script in sorted(resources.files("elt.warehouse").joinpath("sql").iterdir(), key=lambda p: p.name):
        if script.name.endswith(".sql"):
            conn.execute(script.read_text(encoding="utf-8"))


def raw_table_ddl(contract: Contract) -> sql.Composed:
    schema, table = contract.target_table.split(".")
    columns = [sql.SQL("{} {}").format(sql.Identifier(c.name), sql.SQL(c.type)) for c in contract.columns]
    columns += [
        sql.SQL("_file_id bigint not null references ops.file_ledger (file_id)"),
        sql.SQL("_row_number bigint not null"),
        sql.SQL("_loaded_at timestamptz not null default now()"),
        sql.SQL("primary key (_file_id, _row_number)"),
    ]
    return sql.SQL("create table if not exists {}.{} (\n    {}\n)").format(
        sql.Identifier(schema), sql.Identifier(table), sql.SQL(",\n    ").join(columns)
    )


def ensure_warehouse(conn: psycopg.Connection, contracts: dict[str, Contract]) -> None:
    """Ops schema plus every contract's raw table, in one transaction."""
    with conn.transaction():
        apply_ops_schema(conn)
        for contract in contracts.values():
            schema = contract.target_table.split(".")[0]
            conn.execute(sql.SQL("create schema if not exists {}").format(sql.Identifier(schema)))
            conn.execute(raw_table_ddl(contract))
