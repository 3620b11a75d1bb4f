"""A mart or query out of the warehouse as Arrow record batches, with memory flat in the number of rows.

The rows leave Postgres as `COPY (select ...) TO STDOUT (FORMAT csv)`, the fastest way out of it, and are parsed by
Arrow's streaming CSV reader (C++, a block at a time) into batches typed from the query's own columns: no Python
object per value. The reading transaction is set to UTC and ISO dates (SESSION), so Arrow reads a timestamptz's
`2026-01-05 02:00:00+00` as UTC itself. Types: integers, floats, booleans, dates, times and timestamps as themselves
(timestamptz as UTC);
a numeric with a declared precision and scale as a decimal; an unconstrained numeric (what dbt's arithmetic gives)
as a float64; anything else (text, json, arrays, uuid) as its text.

A CSV delivery needs no Arrow at all: `CsvCopy` hands the destination COPY's own CSV bytes (header, strings quoted,
booleans `true`/`false`, timestamps in UTC, numerics exact), joined into chunks of about CHUNK_BYTES (decision 0030).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
from psycopg import sql

# CSV read per batch: ~5,000 rows of a mart of 10 columns. With 4 MiB the process's peak grew with the rows (320-330 MB
# at 1,000,000 rows, 190 at 200,000; cause not isolated: Arrow's pool backend moves it); 1 MiB is flat and as fast
BLOCK_BYTES = 1024 * 1024
SIMPLE_TYPES = {16: pa.bool_(), 20: pa.int64(), 21: pa.int16(), 23: pa.int32(), 700: pa.float32(),
                701: pa.float64(), 1082: pa.date32(), 1083: pa.time64("us"), 1114: pa.timestamp("us")}
NUMERIC, TIMESTAMPTZ = 1700, 1184
CHUNK_BYTES = 1024 * 1024  # COPY's rows (one message each) joined into chunks of this size for a CSV delivery
# the reading transaction's settings: what makes COPY's text the CSV file's documented conventions
# (docs/connectors-remote.md), and what Arrow parses without help (timestamptz as `... +00`, which it reads as UTC)
SESSION = {"TimeZone": "UTC", "DateStyle": "ISO, YMD", "client_encoding": "UTF8", "extra_float_digits": "1"}


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


def arrow_schema(conn: psycopg.Connection, select: Select) -> pa.Schema:
    """The Arrow schema of the select's result, from its columns as Postgres describes them (no row is read)."""
    cur = conn.execute(sql.SQL("select * from ({}) as delivered limit 0").format(sql.SQL(select.statement)))
    return pa.schema([pa.field(column.name, _arrow_type(column)) for column in cur.description])


def _arrow_type(column) -> pa.DataType:
    if column.type_code in SIMPLE_TYPES:
        return SIMPLE_TYPES[column.type_code]
    if column.type_code == TIMESTAMPTZ:
        return pa.timestamp("us", tz="UTC")
    if column.type_code == NUMERIC:
        if column.precision and column.precision <= 38:
            return pa.decimal128(column.precision, column.scale or 0)
        return pa.float64()
    return pa.string()


def _set_session(conn: psycopg.Connection) -> None:
    """SESSION, for the reading transaction only."""
    conn.execute(sql.SQL("select {}").format(sql.SQL(", ").join(
        sql.SQL("set_config({}, {}, true)").format(sql.Literal(name), sql.Literal(value))
        for name, value in SESSION.items())))


def _copy_statement(select: Select, schema: pa.Schema) -> sql.Composed:
    return sql.SQL("copy (select {} from ({}) as delivered) to stdout (format csv)").format(
        sql.SQL(", ").join(sql.Identifier(f.name) for f in schema), sql.SQL(select.statement))


class _CopyStream:
    """COPY's output as a readable file object for Arrow's CSV reader. Postgres sends one message per row: a read
    joins as many as the size asked for (one Python step per row, no slicing per row)."""

    def __init__(self, copy):
        self._chunks = iter(copy)
        self._pending = b""
        self.closed = False

    def read(self, size: int = -1) -> bytes:
        parts, have = [self._pending], len(self._pending)
        for chunk in self._chunks:  # memoryviews that own their buffer: safe to keep until the join
            parts.append(chunk)
            have += len(chunk)
            if 0 <= size <= have:
                break
        data = b"".join(parts)
        if size < 0 or len(data) <= size:
            self._pending = b""
            return data
        self._pending = data[size:]
        return data[:size]

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self.closed = True


def batches(conn: psycopg.Connection, select: Select, schema: pa.Schema,
            block_bytes: int | None = None) -> Iterator[pa.RecordBatch]:
    """The select's rows as record batches of `schema`; at least one (empty when there are no rows). `conn` is
    given to this alone until the iterator ends (a COPY holds it)."""
    options = (pacsv.ReadOptions(column_names=schema.names, block_size=block_bytes or BLOCK_BYTES),
               pacsv.ParseOptions(newlines_in_values=True),
               pacsv.ConvertOptions(column_types={f.name: f.type for f in schema}, strings_can_be_null=True,
                                    quoted_strings_can_be_null=False, true_values=["t"], false_values=["f"]))
    sent = False
    _set_session(conn)
    with conn.cursor().copy(_copy_statement(select, schema)) as copy:
        stream = _CopyStream(copy)
        first = stream.read(1)
        if first:
            reader = pacsv.open_csv(_Prefixed(first, stream), *options)
            for batch in reader:
                sent = True
                yield batch.cast(schema) if batch.schema != schema else batch
    if not sent:
        yield pa.RecordBatch.from_pylist([], schema=schema)


class _Prefixed:
    """A stream with bytes already read put back in front (the first byte, read to tell an empty result)."""

    def __init__(self, head: bytes, stream: _CopyStream):
        self._head, self._stream = head, stream
        self.closed = False

    def read(self, size: int = -1) -> bytes:
        head, self._head = self._head, b""
        if size >= 0 and size <= len(head):
            self._head = head[size:]
            return head[:size]
        return head + self._stream.read(-1 if size < 0 else size - len(head))

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self.closed = True


class CsvCopy:
    """The select's result as one CSV file's bytes, straight from `COPY ... TO STDOUT (FORMAT csv, HEADER)`: iterate
    for chunks of about CHUNK_BYTES; `rows` is the number of data rows once the iteration has ended (None before).

    The file's conventions are set here, once (docs/connectors-remote.md): a header; strings (every column Arrow
    would read as text: text, json, arrays, uuid) always quoted, so an empty string is `""` and a null an empty
    field; booleans `true`/`false`; dates `2026-01-05`; timestamps `2026-01-05 02:00:00` and, with a time zone,
    in UTC `2026-01-05 02:00:00+00`; numerics with the digits the mart holds; UTF-8, `\n` line ends."""

    def __init__(self, conn: psycopg.Connection, select: Select, schema: pa.Schema):
        self.conn, self.select, self.schema = conn, select, schema
        self.rows: int | None = None
        self._chunks: Iterator[bytes] | None = None

    def statement(self) -> sql.Composed:
        columns = [sql.SQL("{}::text as {}").format(sql.Identifier(f.name), sql.Identifier(f.name))
                   if pa.types.is_boolean(f.type) else sql.Identifier(f.name) for f in self.schema]
        quoted = [sql.Identifier(f.name) for f in self.schema if pa.types.is_string(f.type)]
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
