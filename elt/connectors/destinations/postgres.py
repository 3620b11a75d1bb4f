"""Destination `postgres`: a table in another Postgres database (a partner's, a reporting replica), replaced whole or
merged on a key, in one transaction.

* `mode: replace` - the table is emptied and filled again in one transaction (TRUNCATE then COPY): readers see the old
  rows until the commit and the new ones after, never a mixture; views and grants on it are kept. A missing table is
  created from the delivery's columns.
* `mode: merge` - the rows are copied into a temporary table, then inserted into the table, a row whose `key` is
  already there updating it (the table is created with `key` as its primary key when missing; an existing one needs a
  unique index on `key`).

Exactly once: the same transaction writes the run_key into `<schema>.connector_deliveries` (created when missing),
which `delivered` reads: a delivery is in the table with its record, or not at all.

    to: {kind: postgres, table: reporting.bed_occupancy, mode: replace,
         credentials: {conn_id: partner_reporting}}     # AIRFLOW_CONN_PARTNER_REPORTING=postgresql://...
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from typing import TYPE_CHECKING, Literal

import psycopg
from psycopg import sql
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from elt.connectors.base import (
    Credentials,
    Delivered,
    DestinationRefused,
    DestinationUnavailable,
    RunContext,
)
from elt.connectors.formats import CountingSink, csv_ready

if TYPE_CHECKING:  # loaded when a delivery runs (base.py: kinds load their clients when used)
    import pyarrow as pa

BOOKKEEPING = "connector_deliveries"
# Postgres's errors that retrying cannot mend: the table's shape, permissions, data that does not fit it.
REFUSED_CLASSES = ("22", "23", "42", "28")  # data exception, integrity, syntax/permission/undefined, authorization


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["postgres"]
    table: str = Field(pattern=r"^[a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]*$", description="schema.table in the database.")
    mode: Literal["replace", "merge"] = "replace"
    key: tuple[str, ...] = Field((), description="The columns a merge matches rows on (merge only).")
    credentials: Credentials = Field(description="host, port, login, password and schema (the database name).")

    @field_validator("key")
    @classmethod
    def _names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(name.lower() for name in value)

    @model_validator(mode="after")
    def _merge_needs_key(self):
        if (self.mode == "merge") != bool(self.key):
            raise ValueError("key is required with mode: merge, and only then")
        return self


def open(options: Options) -> PostgresDestination:  # noqa: A001 - the contract's name (base.py)
    return PostgresDestination(options)


def _pg_type(kind: pa.DataType) -> str:
    """The Postgres type a new table's column gets for an Arrow type."""
    import pyarrow as pa

    if pa.types.is_decimal(kind):
        return f"numeric({kind.precision}, {kind.scale})"
    if pa.types.is_timestamp(kind):
        return "timestamptz" if kind.tz else "timestamp"
    simple = {pa.int16(): "smallint", pa.int32(): "integer", pa.int64(): "bigint", pa.float32(): "real",
              pa.float64(): "double precision", pa.bool_(): "boolean", pa.date32(): "date", pa.time64("us"): "time"}
    return simple.get(kind, "text")


class PostgresDestination:
    def __init__(self, options: Options):
        self.options = options
        self.schema, self.table = options.table.split(".")

    def _connect(self, ctx: RunContext) -> psycopg.Connection:
        secrets = self.options.credentials.resolve()
        try:
            return psycopg.connect(host=secrets.get("host"), port=secrets.get("port"), user=secrets.get("login"),
                                   password=secrets.get("password"), dbname=secrets.get("schema"),
                                   connect_timeout=10, application_name=f"elt-connector-{ctx.connector}")
        except psycopg.OperationalError:
            raise DestinationUnavailable(f"connector {ctx.connector}: cannot connect to the destination database "
                                         f"({secrets.get('host')}:{secrets.get('port', 5432)})") from None

    def location(self) -> str:
        return f"postgres table {self.options.table}"

    def delivered(self, ctx: RunContext) -> Delivered | None:
        with self._connect(ctx) as conn, _translated(ctx, self.location()):
            found = conn.execute("select to_regclass(%s) is not null",
                                 (f"{self.schema}.{BOOKKEEPING}",)).fetchone()[0]
            row = found and conn.execute(
                sql.SQL("select rows, bytes, sha256 from {} where run_key = %s").format(
                    sql.Identifier(self.schema, BOOKKEEPING)), (ctx.run_key,)).fetchone()
        if not row:
            return None
        return Delivered(self.location(), row[0], row[1], row[2], {"found": f"run_key in {BOOKKEEPING}"})

    def deliver(self, ctx: RunContext, batches: Iterable[pa.RecordBatch]) -> Delivered:
        batches = iter(batches)
        first = next(batches)  # the engine always gives one batch (perhaps empty): the columns and their types
        if ctx.dry_run:
            sink = CountingSink()
            rows = sum(_copy_batch(sink, batch) for batch in (first, *batches))
            return Delivered(self.location(), rows, sink.bytes, sink.sha256, {"dry_run": True})
        with self._connect(ctx) as conn, _translated(ctx, self.location()):
            target = self._prepare(conn, first.schema)
            columns = sql.SQL(", ").join(sql.Identifier(name) for name in first.schema.names)
            with conn.cursor().copy(sql.SQL("copy {} ({}) from stdin (format csv)").format(target, columns)) as copy:
                sink = CountingSink(copy.write)
                rows = _copy_batch(sink, first) + sum(_copy_batch(sink, batch) for batch in batches)
            if self.options.mode == "merge":
                self._merge(conn, first.schema.names)
            conn.execute(sql.SQL("insert into {} (run_key, connector, table_name, rows, bytes, sha256) values "
                                 "(%s, %s, %s, %s, %s, %s) on conflict (run_key) do update set rows = excluded.rows, "
                                 "bytes = excluded.bytes, sha256 = excluded.sha256, delivered_at = now()").format(
                sql.Identifier(self.schema, BOOKKEEPING)),
                (ctx.run_key, ctx.connector, self.options.table, rows, sink.bytes, sink.sha256))
        return Delivered(self.location(), rows, sink.bytes, sink.sha256, {"mode": self.options.mode})

    def _prepare(self, conn: psycopg.Connection, schema: pa.Schema) -> sql.Composable:
        """Create what is missing; for a replace, empty the table; return what the COPY goes into."""
        table = sql.Identifier(self.schema, self.table)
        conn.execute(sql.SQL("create schema if not exists {}").format(sql.Identifier(self.schema)))
        conn.execute(sql.SQL("create table if not exists {} (run_key text primary key, connector text not null, "
                             "table_name text not null, rows bigint not null, bytes bigint not null, sha256 text not "
                             "null, delivered_at timestamptz not null default now())").format(
            sql.Identifier(self.schema, BOOKKEEPING)))
        definition = [sql.SQL("{} {}").format(sql.Identifier(f.name), sql.SQL(_pg_type(f.type))) for f in schema]
        if self.options.mode == "merge":
            definition.append(sql.SQL("primary key ({})").format(
                sql.SQL(", ").join(map(sql.Identifier, self.options.key))))
        conn.execute(sql.SQL("create table if not exists {} ({})").format(table, sql.SQL(", ").join(definition)))
        if self.options.mode == "replace":
            conn.execute(sql.SQL("truncate {}").format(table))
            return table
        conn.execute(sql.SQL("create temporary table connector_incoming (like {}) on commit drop").format(table))
        return sql.Identifier("connector_incoming")

    def _merge(self, conn: psycopg.Connection, names: list[str]) -> None:
        columns = sql.SQL(", ").join(map(sql.Identifier, names))
        updates = [sql.SQL("{0} = excluded.{0}").format(sql.Identifier(n)) for n in names if n not in self.options.key]
        action = sql.SQL("do update set {}").format(sql.SQL(", ").join(updates)) if updates else sql.SQL("do nothing")
        conn.execute(sql.SQL("insert into {} ({}) select {} from connector_incoming on conflict ({}) {}").format(
            sql.Identifier(self.schema, self.table), columns, columns,
            sql.SQL(", ").join(map(sql.Identifier, self.options.key)), action))


def _copy_batch(sink: CountingSink, batch: pa.RecordBatch) -> int:
    """One batch as COPY's CSV (strings quoted, so an empty one stays empty and a null stays null)."""
    import pyarrow.csv as pacsv

    buffer = io.BytesIO()
    pacsv.write_csv(csv_ready(batch), buffer, pacsv.WriteOptions(include_header=False))
    sink.write(buffer.getbuffer())
    return batch.num_rows


class _translated:
    """psycopg's errors as the contract's, naming the table and Postgres's error class, never the row's values."""

    def __init__(self, ctx: RunContext, location: str):
        self.ctx, self.location = ctx, location

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb) -> bool:
        if not isinstance(exc, psycopg.Error):
            return False
        state = getattr(exc, "sqlstate", None) or ""
        name = type(exc).__name__
        if state[:2] in REFUSED_CLASSES:
            raise DestinationRefused(f"connector {self.ctx.connector}: {self.location} refused the delivery ({name}, "
                                     f"SQLSTATE {state}): check the table's columns, key and permissions") from None
        raise DestinationUnavailable(f"connector {self.ctx.connector}: {self.location} failed ({name}); the run may "
                                     "be retried") from None
