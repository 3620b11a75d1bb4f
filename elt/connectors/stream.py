"""A mart or query out of the warehouse as Arrow record batches, with memory flat in the number of rows.

The rows leave Postgres through the ADBC PostgreSQL driver (decision 0036): it reads the result as binary COPY and
builds Arrow arrays in C, a batch of about BATCH_BYTES at a time, on a read-only connection of its own: no text to
parse, no Python object per value, no session setting to depend on. Types, from the query's own columns
(`arrow_schema`): integers, floats, booleans, dates, times and timestamps as themselves (timestamptz as UTC); a
numeric with a declared precision and scale as a decimal; an unconstrained numeric (what dbt's arithmetic gives) as a
float64; anything else (text, json, arrays, uuid) as its text.

A CSV delivery needs no Arrow at all: `CsvCopy` hands the destination COPY's own CSV bytes (header, strings quoted,
booleans `true`/`false`, timestamps in UTC, numerics exact), joined into chunks of about CHUNK_BYTES (decision 0030).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

if TYPE_CHECKING:  # pyarrow is loaded by the Arrow deliveries only: a CSV delivery reads COPY's bytes
    import pyarrow as pa

# Arrow read per batch (the driver's hint): ~8,000 rows of a mart of 10 columns. Its default, 16 MiB, would hold
# several of them while a Parquet row group fills
BATCH_BYTES = 1024 * 1024
# Postgres types (oids) with an Arrow type of their own: pyarrow's factory and its arguments
SIMPLE_TYPES = {16: ("bool_",), 20: ("int64",), 21: ("int16",), 23: ("int32",), 700: ("float32",),
                701: ("float64",), 1082: ("date32",), 1083: ("time64", "us"), 1114: ("timestamp", "us")}
BOOLEAN, NUMERIC, TIMESTAMPTZ = 16, 1700, 1184
CHUNK_BYTES = 1024 * 1024  # COPY's rows (one message each) joined into chunks of this size for a CSV delivery
# how values print when they leave as text, whatever the server's defaults: COPY's CSV (the file's documented
# conventions, docs/connectors-remote.md) and the text columns of an Arrow delivery (intervals, arrays of dates)
SESSION = {"TimeZone": "UTC", "DateStyle": "ISO, YMD", "IntervalStyle": "postgres", "client_encoding": "UTF8",
           "extra_float_digits": "1"}


@dataclass(frozen=True)
class Select:
    """What to read: a select statement (a mart's is `select * from schema.table`)."""

    statement: str

    @classmethod
    def of(cls, deliver) -> Select:
        if deliver.mart:
            schema, table = deliver.mart.split(".")
            return cls(sql.SQL("select * from {}").format(sql.Identifier(schema, table)).as_string(None))
        return cls(deliver.query)


@dataclass(frozen=True)
class Column:
    """One column of the select's result as Postgres describes it (type oid, and a numeric's precision and scale)."""

    name: str
    type_code: int
    precision: int | None = None
    scale: int | None = None

    @property
    def as_text(self) -> bool:
        """No Arrow type of its own (text, json, arrays, uuid, intervals): delivered as the text Postgres prints."""
        return self.type_code not in SIMPLE_TYPES and self.type_code not in (NUMERIC, TIMESTAMPTZ)

    def arrow_type(self) -> pa.DataType:
        import pyarrow as pa

        if self.type_code in SIMPLE_TYPES:
            factory, *arguments = SIMPLE_TYPES[self.type_code]
            return getattr(pa, factory)(*arguments)
        if self.type_code == TIMESTAMPTZ:
            return pa.timestamp("us", tz="UTC")
        if self.type_code == NUMERIC:
            if self.precision and self.precision <= 38:
                return pa.decimal128(self.precision, self.scale or 0)
            return pa.float64()
        return pa.string()


def describe(conn: psycopg.Connection, select: Select) -> tuple[Column, ...]:
    """The select's columns, as Postgres describes them (no row is read)."""
    cur = conn.execute(sql.SQL("select * from ({}) as delivered limit 0").format(sql.SQL(select.statement)))
    return tuple(Column(c.name, c.type_code, c.precision, c.scale) for c in cur.description)


def arrow_schema(columns: tuple[Column, ...]) -> pa.Schema:
    """The Arrow schema an Arrow delivery writes: each column's `arrow_type`."""
    import pyarrow as pa

    return pa.schema([pa.field(column.name, column.arrow_type()) for column in columns])


def _set_session(conn: psycopg.Connection) -> None:
    """SESSION, for the reading transaction only."""
    conn.execute(sql.SQL("select {}").format(sql.SQL(", ").join(
        sql.SQL("set_config({}, {}, true)").format(sql.Literal(name), sql.Literal(value))
        for name, value in SESSION.items())))


def batches(database_url: str, select: Select, schema: pa.Schema, *, application_name: str = "elt-connector",
            batch_bytes: int = BATCH_BYTES) -> Iterator[pa.RecordBatch]:
    """The select's rows as record batches of `schema` (`arrow_schema`); at least one (empty when there are no rows).
    Read on a connection of its own, read-only, which closes when the iterator ends or is closed (a destination that
    stopped early: Postgres ends the read with the session)."""
    # the driver's low-level API: its DB-API module imports pyarrow.dataset and pandas (0.6 s a process)
    import adbc_driver_manager as adbc
    import adbc_driver_postgresql
    import pyarrow as pa

    sent = False
    with (adbc_driver_postgresql.connect(_read_only(database_url, application_name)) as database,
          adbc.AdbcConnection(database) as conn, adbc.AdbcStatement(conn) as statement):
        statement.set_options(**{"adbc.postgresql.batch_size_hint_bytes": str(batch_bytes)})
        statement.set_sql_query(_typed_select(select, schema).as_string(None))
        stream, _ = statement.execute_query()
        reader = pa.RecordBatchReader.from_stream(stream)
        try:
            for batch in reader:
                sent = True
                yield batch.cast(schema)  # the driver's field metadata dropped, text numerics made decimals
        finally:
            reader.close()  # before the statement and connection it reads from
    if not sent:
        yield pa.RecordBatch.from_pylist([], schema=schema)


# the Arrow reading session: SESSION, read-only, and rows in the table's order every time (a REST delivery resumes
# after the batches an endpoint took: docs/connectors-remote.md), so no synchronised scan and no parallel workers
READING = {**SESSION, "default_transaction_read_only": "on", "synchronize_seqscans": "off",
           "max_parallel_workers_per_gather": "0"}


def _read_only(database_url: str, application_name: str) -> str:
    """`database_url` as libpq connection parameters for the Arrow reading session (READING), named (options kept)."""
    # libpq splits options at spaces: one inside a value (DateStyle's "ISO, YMD") is escaped with a backslash
    settings = [f"-c {name}=" + value.replace(" ", "\\ ") for name, value in READING.items()]
    options = conninfo_to_dict(database_url).get("options") or ""
    return make_conninfo(database_url, application_name=application_name, options=" ".join([options, *settings]).strip())


def _typed_select(select: Select, schema: pa.Schema) -> sql.Composed:
    """The select with each column cast to what the driver turns into its Arrow type: text for what `schema` has as
    text (json, arrays, uuid, intervals print as Postgres prints them) or as a decimal (cast by Arrow from the exact
    digits), float8 for a float64 (an unconstrained numeric); the rest (integers, booleans, dates, times, timestamps)
    arrive typed as they are."""
    import pyarrow as pa

    def column(field: pa.Field) -> sql.Composable:
        name = sql.Identifier(field.name)
        if pa.types.is_string(field.type) or pa.types.is_decimal(field.type):
            return sql.SQL("{}::text as {}").format(name, name)
        if pa.types.is_float64(field.type):
            return sql.SQL("{}::float8 as {}").format(name, name)
        return name

    return sql.SQL("select {} from ({}) as delivered").format(
        sql.SQL(", ").join(column(field) for field in schema), sql.SQL(select.statement))


class CsvCopy:
    """The select's result as one CSV file's bytes, straight from `COPY ... TO STDOUT (FORMAT csv, HEADER)`: iterate
    for chunks of about CHUNK_BYTES; `rows` is the number of data rows once the iteration has ended (None before).

    The file's conventions are set here, once (docs/connectors-remote.md): a header; strings (every column without
    an Arrow type of its own, `Column.as_text`: text, json, arrays, uuid) always quoted, so an empty string is `""` and a null an empty
    field; booleans `true`/`false`; dates `2026-01-05`; timestamps `2026-01-05 02:00:00` and, with a time zone,
    in UTC `2026-01-05 02:00:00+00`; numerics with the digits the mart holds; UTF-8, `\n` line ends."""

    def __init__(self, conn: psycopg.Connection, select: Select, columns: tuple[Column, ...]):
        self.conn, self.select, self.columns = conn, select, columns
        self.rows: int | None = None
        self._chunks: Iterator[bytes] | None = None

    def statement(self) -> sql.Composed:
        columns = [sql.SQL("{}::text as {}").format(sql.Identifier(c.name), sql.Identifier(c.name))
                   if c.type_code == BOOLEAN else sql.Identifier(c.name) for c in self.columns]
        quoted = [sql.Identifier(c.name) for c in self.columns if c.as_text]
        options = sql.SQL("format csv, header")
        if quoted:
            options = sql.SQL("{}, force_quote ({})").format(options, sql.SQL(", ").join(quoted))
        return sql.SQL("copy (select {} from ({}) as delivered) to stdout with ({})").format(
            sql.SQL(", ").join(columns), sql.SQL(self.select.statement), options)

    def __iter__(self) -> Iterator[bytes]:
        if self._chunks is None:  # one COPY: a second iteration goes on where the first stopped
            self._chunks = self._copy()
        return self._chunks

    def close(self) -> None:
        """End the COPY if a destination stopped reading (psycopg cancels it)."""
        if self._chunks is not None:
            self._chunks.close()

    def _copy(self) -> Iterator[bytes]:
        _set_session(self.conn)
        cursor = self.conn.cursor()
        with cursor.copy(self.statement()) as copy:
            parts, have = [], 0
            for row in copy:  # one message per row: joined, not handed on one by one
                parts.append(row)
                have += len(row)
                if have >= CHUNK_BYTES:
                    yield b"".join(parts)
                    parts, have = [], 0
            if parts:
                yield b"".join(parts)
        self.rows = cursor.rowcount
