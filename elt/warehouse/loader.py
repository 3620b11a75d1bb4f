"""Load one CSV file straight into its raw table with COPY, then check every contract rule in one SQL pass.

The file is written once: raw tables hold the contract's columns as text, exactly as they landed, so COPY
(Postgres's own CSV parser: quoted newlines, CRLF, UTF-8 or Windows-1252) can put every row there without
a stage. Lineage comes from column defaults: `_file_id` from the transaction's `elt.file_id` setting,
`_row_number` from the table's identity, restarted at 1 for each file under a per-table lock, `_loaded_at`
from now(). One set-based pass then writes a reject for every (row, column, rule) that fails. The typed
view `<table>__valid` (elt/warehouse/schema.py) serves the rows without rejects: trimmed, null spellings
as NULL, sender formats rewritten, cast to the contract's types. Nothing here commits: the caller wraps
the ledger's final state and the data in one transaction. See docs/decisions/0003.
"""

from __future__ import annotations

import hashlib
import itertools
import queue
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date

import psycopg
from psycopg import errors, sql
from psycopg.copy import QueuedLibpqWriter

from elt.contracts import Check, Column, Contract, Layout
from elt.readers.csv_header import (
    UTF8_MULTIBYTE,
    FileRejected,
    HeaderMatch,
    blank,
    kept_columns,
    map_header,
    mixed_encodings_message,
    read_header,
    split_bom,
)

__all__ = ["FileRejected", "LoadResult", "copy_file", "discard_rows", "write_rejects"]
# Encodings tried in order; Windows-1252 is what spreadsheet exports on Windows produce.
ENCODINGS = (("UTF8", "utf-8"), ("WIN1252", "cp1252"))
# First key of the advisory lock that serialises loads into one raw table (its row numbering).
_LOAD_LOCK_CLASS = 0x454C54  # 'ELT'


@dataclass
class LoadResult:
    sha256: str
    encoding: str
    layout: str
    rows_read: int
    rows_rejected: int = 0
    rows_loaded: int = 0
    rejects_by_rule: dict[str, int] = field(default_factory=dict)
    # The period the file's own contents report on, when its reader establishes one (KH03 workbooks).
    period: tuple[date, date] | None = None
    # When the publisher issued the file, when its contents say (a KH03 workbook's Revised: or Published: date).
    published_on: date | None = None


# --- SQL for one column's value: shared by the load-time checks and the typed view -------------------------


def _is_null_spelling(contract: Contract, source: sql.Composable) -> sql.Composable:
    """True when the (non-null) value is one of the contract's null spellings (N/A, -, empty ...)."""
    nulls = sql.Literal([v.upper() for v in contract.null_values])
    longest = sql.Literal(max((len(v) for v in contract.null_values), default=0) + 2)
    # Only a short value can be a null spelling: the length test spares upper() on every long cell.
    return sql.SQL("(length({c}) <= {n_len} and upper(btrim({c})) = any({n}))").format(c=source, n=nulls, n_len=longest)


def cleaned_value(contract: Contract, source: sql.Composable) -> sql.Composable:
    """The value trimmed, with the contract's null spellings turned into NULL."""
    return sql.SQL("case when {} then null else btrim({}) end").format(_is_null_spelling(contract, source), source)


def canonical_value(contract: Contract, layout: Layout, column: Column, source: sql.Composable) -> sql.Composable:
    """The cleaned value rewritten from the layout's format (01/31/2024, $1,234.00) to the canonical spelling."""
    cleaned = cleaned_value(contract, source)
    rewrite = contract.rewrite(layout, column)
    if rewrite is None:
        return cleaned
    pattern, replacement, every = rewrite
    return sql.SQL("regexp_replace({}, {}, {}, {})").format(
        cleaned, sql.Literal(pattern), sql.Literal(replacement), sql.Literal("g" if every else ""))


def is_valid(column: Column, value: sql.Composable) -> sql.Composable:
    """True when the (non-null) canonical value casts to the column's type."""
    if column.type == "date":
        # ISO dates only: '01/02/1990' is ambiguous between day-first and month-first exports.
        return sql.SQL("({v} ~ '^\\d{{4}}-\\d{{2}}-\\d{{2}}$' and pg_input_is_valid({v}, 'date'))").format(v=value)
    return sql.SQL("pg_input_is_valid({v}, {t})").format(v=value, t=sql.Literal(column.type))


def typed_value(column: Column, value: sql.Composable) -> sql.Composable:
    """The value cast to the column's type, NULL when it does not cast (never an error)."""
    if column.type == "text":
        return value
    return sql.SQL("case when {} then ({})::{} end").format(is_valid(column, value), value, sql.SQL(column.type))


def _bound(column: Column, bound: object) -> sql.Composable:
    if bound == "today":
        return sql.SQL("current_date")
    return sql.SQL("{}::{}").format(sql.Literal(str(bound)), sql.SQL(column.type))


def _rules(contract: Contract, layout: Layout, column: Column) -> list[tuple[str, sql.Composable, str]]:
    """(rule code, SQL predicate true when the value breaks the rule, message) for one column of `s`."""
    v = sql.SQL("s.{}").format(sql.Identifier(column.name))
    rules: list[tuple[str, sql.Composable, str]] = []
    if column.name in contract.required_columns(layout):
        # Same as "the canonical value is null" (a format rewrite never makes a value null), tested on the
        # value as landed so that long values skip the trim.
        landed = sql.SQL("s.{}").format(sql.Identifier("_raw_" + column.name))
        rules.append(("required", sql.SQL("({} is null or {})").format(landed, _is_null_spelling(contract, landed)),
                      f"{column.name} is required"))
    if column.type != "text":
        rules.append(("type", sql.SQL("{} is not null and not {}").format(v, is_valid(column, v)),
                      contract.type_message(layout, column)))
    if column.allowed:
        allowed = sql.Literal([a.upper() for a in column.allowed])
        rules.append(("allowed", sql.SQL("{} is not null and upper({}) <> all({})").format(v, v, allowed),
                      f"{column.name} must be one of {', '.join(column.allowed)}"))
    if column.pattern:
        rules.append(("pattern", sql.SQL("{} is not null and {} !~ {}").format(v, v, sql.Literal(column.pattern)),
                      f"{column.name} does not match {column.pattern}"))
    for bound, op in ((column.min, "<"), (column.max, ">")):
        if bound is None:
            continue
        # CASE guarantees the cast only runs on values that passed the type check.
        rules.append((
            "range",
            sql.SQL("case when {} is not null and {} then ({})::{} {} {} else false end").format(
                v, is_valid(column, v) if column.type != "text" else sql.SQL("true"), v, sql.SQL(column.type),
                sql.SQL(op), _bound(column, bound)),
            f"{column.name} must be {'at least' if op == '<' else 'at most'} {bound}",
        ))
    return rules


def _check_rule(contract: Contract, check: Check) -> tuple[str, sql.Composable, str]:
    columns = {c.name: c for c in contract.columns}
    left, right = (typed_value(columns[name], sql.SQL("s.{}").format(sql.Identifier(name)))
                   for name in (check.column, check.other))
    # NULL (a value missing or not of its type) is not a failure here: the column's own rules report it.
    return check.rule, sql.SQL("(({}) {} ({})) is false").format(left, sql.SQL(check.op), right), check.message


# --- The load ----------------------------------------------------------------------------------------------


def _copy(cur: psycopg.Cursor, contract: Contract, match: HeaderMatch, chunks: list[bytes], rest: Iterator[bytes],
          pg_encoding: str, inspect: Callable[[bytes], None] | None = None) -> tuple[str, int]:
    """Stream the file into the raw table; returns the sha256 of the bytes as stored and the rows copied.
    `inspect` sees every chunk before it is sent (and may refuse the file by raising). A layout that ignores
    columns has them taken out on the way (kept_columns): COPY cannot skip an input column."""
    digest = hashlib.sha256()
    schema, table = contract.target_table.split(".")
    statement = sql.SQL(
        "copy {}.{} ({}) from stdin with (format csv, header true, delimiter {}, encoding {})"
    ).format(sql.Identifier(schema), sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, match.columns)),
             sql.Literal(contract.delimiter), sql.Literal(pg_encoding))

    def landed() -> Iterator[bytes]:
        for index, chunk in enumerate(itertools.chain(chunks, rest)):
            digest.update(chunk)
            if index == 0:
                chunk, _ = split_bom(chunk)
            if inspect is not None:
                inspect(chunk)
            yield chunk

    pieces = kept_columns(landed(), match, contract.delimiter) if match.ignores_columns else landed()
    with cur.copy(statement, writer=_BoundedQueuedWriter(cur)) as copy:
        for piece in pieces:
            copy.write(piece)
    return digest.hexdigest(), cur.rowcount


class _BoundedQueuedWriter(QueuedLibpqWriter):
    """Sends to Postgres from a worker thread while the caller reads S3 and hashes. psycopg's queue holds
    1,024 pieces of up to 128 KB; S3 outruns COPY, so that would buffer most of a large file in memory.
    64 pieces (about 8 MB) keep both sides busy."""

    def __init__(self, cursor: psycopg.Cursor):
        super().__init__(cursor)
        self._queue = queue.Queue(maxsize=64)


def _restart_row_numbers(conn: psycopg.Connection, contract: Contract) -> None:
    # setval also drops this session's cached identity values, so the next row is numbered 1.
    conn.execute("select setval(pg_get_serial_sequence(%s, '_row_number'), 1, false)", (contract.target_table,))


def copy_file(conn: psycopg.Connection, contract: Contract, file_id: int,
              open_stream: Callable[[], Iterator[bytes]]) -> LoadResult:
    """COPY the file into its raw table as file `file_id`, trying UTF-8 then Windows-1252. Raises FileRejected,
    whose message names lines and columns, never the file's text."""
    stream = open_stream()
    head_chunks, header = read_header(stream)  # bounded: a first line over MAX_HEADER_BYTES is refused
    if blank(b"".join(head_chunks)):
        raise FileRejected("empty_file", "the file is empty")
    match = map_header(contract, header)
    # One loader at a time per raw table, so that the identity numbers this file's rows 1..n in file order.
    conn.execute("select pg_advisory_xact_lock(%s, hashtext(%s))", (_LOAD_LOCK_CLASS, contract.target_table))
    conn.execute("select set_config('elt.file_id', %s, true)", (str(file_id),))
    not_utf8: str | None = None
    last_error: Exception | None = None
    for attempt, (pg_encoding, _) in enumerate(ENCODINGS):
        if attempt:
            stream = open_stream()
            head_chunks, _ = read_header(stream)
        _restart_row_numbers(conn, contract)
        # Read as Windows-1252 only when no part of it is UTF-8: a file that mixes the two would load garbled.
        inspect = _MixedEncodingWatch(not_utf8) if not_utf8 else None
        try:
            with conn.transaction(), conn.cursor() as cur:  # a savepoint: a failed encoding leaves no rows
                sha256, rows_read = _copy(cur, contract, match, head_chunks, stream, pg_encoding, inspect)
        except (errors.CharacterNotInRepertoire, errors.UntranslatableCharacter) as exc:
            not_utf8 = not_utf8 or where_in_file(exc) or "a line"
            last_error = exc
            continue
        except errors.BadCopyFileFormat as exc:
            raise FileRejected("malformed_csv", copy_problem(exc)) from None
        if rows_read == 0:
            raise FileRejected("no_rows", "the file has a header but no data rows")
        return LoadResult(sha256=sha256, encoding=pg_encoding, layout=match.layout.name, rows_read=rows_read)
    where = where_in_file(last_error) or "a line"
    if "0x00" in (last_error.diag.message_primary or ""):
        raise FileRejected("undecodable_text", f"{where} holds NUL bytes: the file is not UTF-8 or Windows-1252 "
                                               "text (binary, or UTF-16?): export it as CSV UTF-8")
    raise FileRejected("undecodable_text", f"the file is neither UTF-8 nor Windows-1252 text ({where}): export it "
                                           "as CSV UTF-8")


class _MixedEncodingWatch:
    """Refuses a file (mixed_encodings) as soon as a chunk holds a UTF-8 character, once the file has been found
    not to be UTF-8 as a whole. Keeps the last bytes of each chunk, so a character split between two is seen."""

    def __init__(self, not_utf8: str):
        self.not_utf8, self.tail = not_utf8, b""

    def __call__(self, chunk: bytes) -> None:
        if UTF8_MULTIBYTE.search(self.tail + chunk[:3]) or UTF8_MULTIBYTE.search(chunk):
            raise FileRejected("mixed_encodings", mixed_encodings_message(self.not_utf8))
        self.tail = chunk[-3:]


# Postgres's own descriptions of a malformed CSV (copyfromparse.c): fixed texts naming at most a column of the
# raw table. Any other message is replaced by a general one, since it may quote the file.
_SAFE_COPY_MESSAGE = re.compile(
    r"(extra data after last expected column|missing data for column \"[a-z_][a-z0-9_]*\"|unterminated CSV quoted "
    r"field|(literal|unquoted) (carriage return|newline) found in data|end-of-copy marker corrupt|end-of-copy "
    r"marker does not match previous newline style)")
_COPY_CONTEXT = re.compile(r"COPY [a-z_][a-z0-9_]*, line (\d+)(?:, column ([a-z_][a-z0-9_]*))?")


def where_in_file(exc: Exception) -> str | None:
    """'line 7' or 'line 7, column phone', from the CONTEXT of a COPY error (whose tail quotes the row: not kept)."""
    match = _COPY_CONTEXT.match(getattr(getattr(exc, "diag", None), "context", None) or "")
    if match is None:
        return None
    return f"line {match.group(1)}" + (f", column {match.group(2)}" if match.group(2) else "")


def copy_problem(exc: Exception) -> str:
    """What Postgres found wrong with a CSV, and where, without any of the file's text."""
    primary = getattr(getattr(exc, "diag", None), "message_primary", None) or ""
    what = primary if _SAFE_COPY_MESSAGE.fullmatch(primary) else "the file is not valid CSV"
    where = where_in_file(exc)
    return f"{what} ({where})" if where else what


def _file_rows(contract: Contract, layout: Layout, file_id: int, *, only: sql.Composable | None = None) -> sql.Composed:
    """This file's rows with canonical values (as `s.<column>`), the values as landed (`s._raw_<column>`) and
    the row's physical address (`s._ctid`); `only` narrows them further (a predicate on `t`)."""
    schema, table = contract.target_table.split(".")
    values = [
        sql.SQL("{} as {}").format(canonical_value(contract, layout, c, sql.SQL("t.{}").format(sql.Identifier(c.name))),
                                   sql.Identifier(c.name))
        for c in contract.columns
    ]
    landed = [sql.SQL("t.{} as {}").format(sql.Identifier(c.name), sql.Identifier("_raw_" + c.name))
              for c in contract.columns]
    return sql.SQL("(select t.ctid as _ctid, t._row_number, {}, {} from {}.{} as t where t._file_id = {} and {}) as s").format(
        sql.SQL(", ").join(values), sql.SQL(", ").join(landed), sql.Identifier(schema), sql.Identifier(table),
        sql.Literal(file_id), only if only is not None else sql.SQL("true"))


# The planner settings for the rejects pass's read-only scan (see write_rejects), and back to the defaults.
# enable_indexscan off: else the planner walks the unique key's B-tree on (_file_id, _row_number), one
# process row by row (twice the time on 1,000,000 rows), instead of taking the file's pages from that B-tree
# as a bitmap and scanning them in parallel.
_PLANNER_SETTINGS = {"enable_seqscan": "off", "enable_indexscan": "off", "parallel_setup_cost": "0",
                     "parallel_tuple_cost": "0", "min_parallel_table_scan_size": "0"}
_PARALLEL_FILE_SCAN = "; ".join(f"set local {name} = {value}" for name, value in _PLANNER_SETTINGS.items())
_DEFAULT_PLANNING = "; ".join(f"set local {name} to default" for name in _PLANNER_SETTINGS)


def write_rejects(conn: psycopg.Connection, contract: Contract, file_id: int, result: LoadResult) -> LoadResult:
    """One pass over the file's rows: a reject for every (row, column, rule) that fails. Fills the counts."""
    layout = contract.layout(result.layout)
    rules = [(column.name, rule, predicate, message) for column in contract.columns
             for rule, predicate, message in _rules(contract, layout, column)]
    rules += [(check.column, *_check_rule(contract, check)) for check in contract.checks]
    if rules:
        checks = [
            sql.SQL("({}, {}, {}, {}, s.{})").format(predicate, sql.Literal(column), sql.Literal(rule),
                                                      sql.Literal(message), sql.Identifier("_raw_" + column))
            for column, rule, predicate, message in rules
        ]
        any_failed = sql.SQL(" or ").join(sql.SQL("({})").format(p) for _, _, p, _ in rules)
        # Two steps, because a statement that writes never runs in parallel: a read-only scan of the whole
        # file, over every core, finds the rows that break any rule (none, in a good file); then the rejects
        # of just those rows are written, found by their address (TID scan). The rows were just written by
        # this transaction: the unique key's B-tree, which leads with _file_id, finds their pages without
        # reading the table's history, and the planner's statistics do not know them yet, so it is told that
        # a parallel scan pays here.
        conn.execute(_PARALLEL_FILE_SCAN)
        failing = conn.execute(
            sql.SQL("select array_agg(s._ctid)::text[] from {rows} where {any_failed}").format(
                rows=_file_rows(contract, layout, file_id), any_failed=any_failed)
        ).fetchone()[0]
        conn.execute(_DEFAULT_PLANNING)
        if failing:
            conn.execute(
                sql.SQL(
                    "insert into ops.load_rejects (file_id, row_number, column_name, rule, message, raw_value) "
                    "select {file_id}, s._row_number, v.column_name, v.rule, v.message, v.raw_value "
                    "from {rows} "
                    "cross join lateral (values {checks}) as v(failed, column_name, rule, message, raw_value) "
                    "where v.failed"
                ).format(file_id=sql.Literal(file_id), checks=sql.SQL(", ").join(checks),
                         rows=_file_rows(contract, layout, file_id, only=sql.SQL("t.ctid = any({}::tid[])").format(
                             sql.Literal(failing))))
            )
    counts = conn.execute(
        "select rule, count(*) from ops.load_rejects where file_id = %s group by rule", (file_id,)
    ).fetchall()
    result.rejects_by_rule = {rule: n for rule, n in counts}
    result.rows_rejected = conn.execute(
        "select count(distinct row_number) from ops.load_rejects where file_id = %s", (file_id,)
    ).fetchone()[0]
    result.rows_loaded = result.rows_read - result.rows_rejected
    return result


def discard_rows(conn: psycopg.Connection, contract: Contract, file_id: int) -> None:
    """Remove a file's rows from its raw tables (a duplicate, or a file refused whole); rejects are kept."""
    for table_contract in contract.table_contracts():
        schema, table = table_contract.target_table.split(".")
        conn.execute(sql.SQL("delete from {}.{} where _file_id = {}").format(
            sql.Identifier(schema), sql.Identifier(table), sql.Literal(file_id)))
