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
        # No foreign key to ops.file_ledger: rows are only ever inserted by the loader for the ledger row it
        # holds locked, and ledger rows are never deleted; the per-row RI check would double the load time.
        sql.SQL("_file_id bigint not null"),
        sql.SQL("_row_number bigint not null"),
        sql.SQL("_loaded_at timestamptz not null default now()"),
    ]
    # (_file_id, _row_number) is unique by construction (one stage per file, row numbers from an identity),
    # so no B-tree primary key to maintain on every load; file ids only grow, which BRIN indexes nearly free.
    return sql.SQL(
        "create table if not exists {schema}.{table} (\n    {columns}\n);\n"
        "create index if not exists {index} on {schema}.{table} using brin (_file_id)"
    ).format(schema=sql.Identifier(schema), table=sql.Identifier(table),
             columns=sql.SQL(",\n    ").join(columns), index=sql.Identifier(f"{table}__file_id_brin"))


def ensure_warehouse(conn: psycopg.Connection, contracts: dict[str, Contract]) -> None:
    """Ops schema plus every contract's raw table, in one transaction."""
    with conn.transaction():
        apply_ops_schema(conn)
        for contract in contracts.values():
            schema = contract.target_table.split(".")[0]
            conn.execute(sql.SQL("create schema if not exists {}").format(sql.Identifier(schema)))
            conn.execute(raw_table_ddl(contract))
