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

from elt.contracts import CANONICAL_DATE_MASK, Check, Column, Contract, Layout, Rewrite
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
    return rewritten_value(contract, layout, column, cleaned_value(contract, source))


def rewritten_value(contract: Contract, layout: Layout, column: Column, cleaned: sql.Composable) -> sql.Composable:
    """A cleaned value rewritten from the layout's format to the canonical spelling. `cleaned` appears several
    times in a date's rewrite: pass a column reference where its cost matters."""
    rewrite = contract.value_rewrite(layout, column)
    return cleaned if rewrite is None else rewrite_sql(rewrite, cleaned)


def rewrite_sql(rewrite: Rewrite, value: sql.Composable) -> sql.Composable:
    """The rewrite in plain string functions (see elt.contracts.Rewrite): the same result as regexp_replace with
    its pattern and replacement, at a fifth of the cost."""
    if rewrite.removed:
        return sql.SQL("translate({}, {}, '')").format(value, sql.Literal(rewrite.removed))
    pieces: list[sql.Composable] = []
    for start, length in rewrite.fields:
        if pieces:
            pieces.append(sql.Literal(rewrite.joiner))
        pieces.append(sql.SQL("substr({}, {}, {})").format(value, sql.Literal(start + 1), sql.Literal(length)))
    return sql.SQL("case when {} then {} else {} end").format(
        has_mask(value, rewrite.mask), sql.SQL(" || ").join(pieces), value)


def has_mask(value: sql.Composable, mask: str) -> sql.Composable:
    """True when the value is `mask` with each 0 any ASCII digit (00/00/0000): what a regex of [0-9]{n} runs and
    literal separators matches, with translate, at a quarter of the regex's cost."""
    return sql.SQL("translate({}, '0123456789', '0000000000') = {}").format(value, sql.Literal(mask))


def is_valid(column: Column, value: sql.Composable) -> sql.Composable:
    """True when the (non-null) canonical value casts to the column's type."""
    if column.type == "date":
        # ISO dates only: '01/02/1990' is ambiguous between day-first and month-first exports.
        return sql.SQL("({} and pg_input_is_valid({}, 'date'))").format(has_mask(value, CANONICAL_DATE_MASK), value)
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


def _read_columns(contract: Contract, layout: Layout) -> list[Column]:
    """The columns a file in `layout` can fill: those its header maps, and the required ones (an unmapped
    required column is NULL on every row, and so a reject). The others are NULL in raw on every row of the
    file, which breaks no rule: they are not checked at all."""
    required = set(contract.required_columns(layout))
    return [c for c in contract.columns if c.name in layout.columns or c.name in required]


def _checked_columns(contract: Contract, layout: Layout) -> list[Column]:
    """The read columns that a rule reads: the rejects pass computes no value that nothing checks."""
    return [c for c in _read_columns(contract, layout) if _needs_value(contract, c)
            or c.name in contract.required_columns(layout)]


def _needs_value(contract: Contract, column: Column) -> bool:
    """True when a rule reads the column's canonical value: all but `required`, which reads the value as landed."""
    in_checks = {name for check in contract.checks for name in (check.column, check.other)}
    return (column.type != "text" or bool(column.allowed or column.pattern) or column.min is not None
            or column.max is not None or column.name in in_checks)


def _rules(contract: Contract, layout: Layout, column: Column) -> list[tuple[str, sql.Composable, str]]:
    """(rule code, SQL predicate true when the value breaks the rule, message) for one column of the file's rows
    (`_file_rows`): `r.<column>` its canonical value, `r._typed_<column>` that value typed (NULL when it does not
    cast)."""
    v = sql.SQL("r.{}").format(sql.Identifier(column.name))
    typed = sql.SQL("r.{}").format(sql.Identifier("_typed_" + column.name)) if column.type != "text" else v
    rules: list[tuple[str, sql.Composable, str]] = []
    if column.name in contract.required_columns(layout):
        # Same as "the canonical value is null" (a format rewrite never makes a value null), tested on the
        # value as landed so that long values skip the trim, and a column that only this rule reads is not
        # cleaned at all.
        landed = sql.SQL("r.{}").format(sql.Identifier("_raw_" + column.name))
        rules.append(("required", sql.SQL("({} is null or {})").format(landed, _is_null_spelling(contract, landed)),
                      f"{column.name} is required"))
    if column.type != "text":
        rules.append(("type", sql.SQL("{} is not null and {} is null").format(v, typed),
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
        # A value that is not of its type is NULL here: the type rule reports it, not this one.
        rules.append(("range", sql.SQL("({} {} {}) is true").format(typed, sql.SQL(op), _bound(column, bound)),
                      f"{column.name} must be {'at least' if op == '<' else 'at most'} {bound}"))
    return rules


def _check_rule(contract: Contract, layout: Layout, check: Check) -> tuple[str, sql.Composable, str] | None:
    """A cross-column check on the typed values; None when the layout does not fill one of its columns (NULL on
    every row, which is not a failure: NULL never is, the column's own rules report a missing value)."""
    columns = {c.name: c for c in _checked_columns(contract, layout)}
    if check.column not in columns or check.other not in columns:
        return None
    left, right = (sql.SQL("r.{}").format(sql.Identifier(("_typed_" if columns[name].type != "text" else "") + name))
                   for name in (check.column, check.other))
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


def _file_rows(contract: Contract, layout: Layout, file_id: int, *, only: sql.Composable | None = None,
               landed: bool = False) -> sql.Composed:
    """This file's rows as `r`: each checked column's canonical value (`r.<column>`), that value typed (`r._typed_
    <column>`, NULL when it does not cast; non-text columns), the row's physical address (`r._ctid`) and number,
    and with `landed` the values as landed (`r._raw_<column>`); `only` narrows the rows (a predicate on `t`).

    Up to three levels (cleaned; rewritten, when the layout has formats to rewrite; typed) so that each is
    computed once per value: an OFFSET clause keeps the planner from merging a level into the one above, where
    it would compute the trim, the null spellings, the rewrite and the cast again wherever the next level or a
    rule reads the value. The clause is OFFSET NULL (no offset), not the usual OFFSET 0: Postgres 16 sees `0`
    as a cast to bigint, not a constant, when it decides whether a subquery may run in parallel workers, and
    keeps every level above it in the leader. A LATERAL subquery would not run in workers either (its outer
    references are parameters). See docs/decisions/0027."""
    schema, table = contract.target_table.split(".")
    checked = _checked_columns(contract, layout)
    valued = [c for c in checked if _needs_value(contract, c)]
    required = set(contract.required_columns(layout))
    raw = [c for c in checked if landed or c.name in required]
    first = [_level(valued, lambda c, v: cleaned_value(contract, v), "t"), _level(raw, lambda c, v: v, "t", "_raw_")]
    # Values as landed need no fence: merged into the level above, they are read straight from the row.
    rows = sql.SQL("select t.ctid as _ctid, t._row_number{} from {}.{} as t where t._file_id = {} and {}{}").format(
        _columns(first), sql.Identifier(schema), sql.Identifier(table), sql.Literal(file_id),
        only if only is not None else sql.SQL("true"), sql.SQL(" offset null" if valued else ""))
    if any(contract.value_rewrite(layout, c) for c in valued):
        rewritten = [_level(valued, lambda c, v: rewritten_value(contract, layout, c, v), "k"),
                     _level(raw, lambda c, v: v, "k", "_raw_", source_prefix="_raw_")]
        rows = sql.SQL("select k._ctid, k._row_number{} from ({}) as k offset null").format(_columns(rewritten), rows)
    typed = [c for c in valued if c.type != "text"]
    if typed:
        rows = sql.SQL("select k.*{} from ({}) as k offset null").format(
            _columns([_level(typed, typed_value, "k", "_typed_")]), rows)
    return sql.SQL("({}) as r").format(rows)


def _columns(levels: list[sql.Composable | None]) -> sql.Composable:
    """`, a, b, ...` of the non-empty column lists, or nothing."""
    return sql.SQL("").join(sql.SQL(", {}").format(level) for level in levels if level is not None)


def _level(columns: list[Column], value: Callable[[Column, sql.Composable], sql.Composable], alias: str,
           prefix: str = "", *, source_prefix: str = "") -> sql.Composable | None:
    """`value(column, <alias>.<source_prefix><column>) as <prefix><column>` for each column (one level of
    _file_rows); None for no columns."""
    if not columns:
        return None
    return sql.SQL(", ").join(
        sql.SQL("{} as {}").format(
            value(c, sql.SQL("{}.{}").format(sql.SQL(alias), sql.Identifier(source_prefix + c.name))),
            sql.Identifier(prefix + c.name)) for c in columns)


# The planner settings for the rejects pass's read-only scan (see write_rejects), and back to the defaults.
# enable_indexscan off: else the planner walks the unique key's B-tree on (_file_id, _row_number), one
# process row by row (twice the time on 1,000,000 rows), instead of taking the file's pages from that B-tree
# as a bitmap and scanning them in parallel.
_PLANNER_SETTINGS = {"enable_seqscan": "off", "enable_indexscan": "off", "parallel_setup_cost": "0",
                     "parallel_tuple_cost": "0", "min_parallel_table_scan_size": "0"}
PARALLEL_FILE_SCAN = "; ".join(f"set local {name} = {value}" for name, value in _PLANNER_SETTINGS.items())
_DEFAULT_PLANNING = "; ".join(f"set local {name} to default" for name in _PLANNER_SETTINGS)


def _all_rules(contract: Contract, layout: Layout) -> list[tuple[str, str, sql.Composable, str]]:
    """(column, rule code, SQL predicate true when broken, message) of every rule a file in `layout` is held to."""
    rules = [(column.name, rule, predicate, message) for column in _checked_columns(contract, layout)
             for rule, predicate, message in _rules(contract, layout, column)]
    checks = (_check_rule(contract, layout, check) for check in contract.checks)
    return rules + [(check.column, *rule) for check, rule in zip(contract.checks, checks, strict=True) if rule]


def failing_rows_query(contract: Contract, layout: Layout, file_id: int,
                       any_failed: sql.Composable | None = None) -> sql.Composed:
    """The read-only scan of the rejects pass: the addresses of the file's rows that break any rule (NULL when
    none does). Run it under PARALLEL_FILE_SCAN."""
    if any_failed is None:
        any_failed = sql.SQL(" or ").join(sql.SQL("({})").format(p) for _, _, p, _ in _all_rules(contract, layout))
    return sql.SQL("select array_agg(r._ctid)::text[] from {rows} where {any_failed}").format(
        rows=_file_rows(contract, layout, file_id), any_failed=any_failed)


def write_rejects(conn: psycopg.Connection, contract: Contract, file_id: int, result: LoadResult) -> LoadResult:
    """One pass over the file's rows: a reject for every (row, column, rule) that fails. Fills the counts."""
    layout = contract.layout(result.layout)
    rules = _all_rules(contract, layout)
    if rules:
        checks = [
            sql.SQL("({}, {}, {}, {}, r.{})").format(predicate, sql.Literal(column), sql.Literal(rule),
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
        conn.execute(PARALLEL_FILE_SCAN)
        failing = conn.execute(failing_rows_query(contract, layout, file_id, any_failed)).fetchone()[0]
        conn.execute(_DEFAULT_PLANNING)
        if failing:
            conn.execute(
                sql.SQL(
                    "insert into ops.load_rejects (file_id, row_number, column_name, rule, message, raw_value) "
                    "select {file_id}, r._row_number, v.column_name, v.rule, v.message, v.raw_value "
                    "from {rows} "
                    "cross join lateral (values {checks}) as v(failed, column_name, rule, message, raw_value) "
                    "where v.failed"
                ).format(file_id=sql.Literal(file_id), checks=sql.SQL(", ").join(checks),
                         rows=_file_rows(contract, layout, file_id, landed=True,
                                         only=sql.SQL("t.ctid = any({}::tid[])").format(sql.Literal(failing))))
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
