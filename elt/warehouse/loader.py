"""Set-based validation and COPY of one CSV file into its raw table, inside the caller's transaction.

The file is streamed into a temporary all-text stage table with COPY (Postgres parses the CSV: quoted
newlines, CRLF and both encodings are its job), then every contract rule is checked in one SQL pass that
writes rejects, and the rows that pass are cast and inserted into the raw table with lineage columns.
Nothing here commits: the caller wraps ledger update and data in one transaction.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import psycopg
from psycopg import errors, sql

from elt.contracts import Column, Contract
from elt.readers.csv_header import UTF8_BOM, FileRejected, map_header, read_header, split_bom

__all__ = ["FileRejected", "LoadResult", "insert_valid_rows", "stage_file", "write_rejects"]
# Encodings tried in order; Windows-1252 is what spreadsheet exports on Windows produce.
ENCODINGS = (("UTF8", "utf-8"), ("WIN1252", "cp1252"))


@dataclass
class LoadResult:
    sha256: str
    encoding: str
    rows_read: int
    rows_rejected: int = 0
    rows_loaded: int = 0
    rejects_by_rule: dict[str, int] = field(default_factory=dict)


def _cleaned(contract: Contract) -> sql.Composed:
    """The stage table with every value trimmed and the contract's null spellings turned into NULL."""
    nulls = sql.Literal([v.upper() for v in contract.null_values])
    longest = sql.Literal(max((len(v) for v in contract.null_values), default=0) + 2)
    # Only a short value can be a null spelling: the length test spares upper() on every long cell.
    exprs = [
        sql.SQL(
            "case when length({c}) <= {n_len} and upper(btrim({c})) = any({n}) then null else btrim({c}) end as {c}"
        ).format(c=sql.Identifier(column.name), n=nulls, n_len=longest)
        for column in contract.columns
    ]
    return sql.SQL("(select _row_number, {} from pg_temp._stage) as s").format(sql.SQL(", ").join(exprs))


def _is_valid(column: Column) -> sql.Composable:
    value = sql.SQL("s.{}").format(sql.Identifier(column.name))
    if column.type == "date":
        # ISO dates only: '01/02/1990' is ambiguous between day-first and month-first exports.
        return sql.SQL("({v} ~ '^\\d{{4}}-\\d{{2}}-\\d{{2}}$' and pg_input_is_valid({v}, 'date'))").format(v=value)
    return sql.SQL("pg_input_is_valid({v}, {t})").format(v=value, t=sql.Literal(column.type))


def _rules(column: Column) -> list[tuple[str, sql.Composable, str]]:
    """(rule code, SQL predicate that is true when the value breaks the rule, message) for one column."""
    v = sql.SQL("s.{}").format(sql.Identifier(column.name))
    typed = sql.SQL("{}::{}").format(v, sql.SQL(column.type))
    rules: list[tuple[str, sql.Composable, str]] = []
    if column.required:
        rules.append(("required", sql.SQL("{} is null").format(v), f"{column.name} is required"))
    if column.type != "text":
        rules.append(
            ("type", sql.SQL("{} is not null and not {}").format(v, _is_valid(column)),
             f"{column.name} is not a valid {column.type}")
        )
    if column.allowed:
        allowed = sql.Literal([a.upper() for a in column.allowed])
        rules.append(
            ("allowed", sql.SQL("{} is not null and upper({}) <> all({})").format(v, v, allowed),
             f"{column.name} must be one of {', '.join(column.allowed)}")
        )
    if column.pattern:
        rules.append(
            ("pattern", sql.SQL("{} is not null and {} !~ {}").format(v, v, sql.Literal(column.pattern)),
             f"{column.name} does not match {column.pattern}")
        )
    for bound, op in ((column.min, "<"), (column.max, ">")):
        if bound is None:
            continue
        limit = sql.SQL("{}::{}").format(sql.Literal(str(bound)), sql.SQL(column.type))
        # CASE guarantees the cast only runs on values that passed the type check.
        rules.append(
            ("range",
             sql.SQL("case when {} is not null and {} then {} {} {} else false end").format(
                 v, _is_valid(column) if column.type != "text" else sql.SQL("true"), typed, sql.SQL(op), limit),
             f"{column.name} must be {'at least' if op == '<' else 'at most'} {bound}")
        )
    return rules


def _copy_stage(cur: psycopg.Cursor, columns: list[str], chunks: list[bytes], rest: Iterator[bytes],
                pg_encoding: str, delimiter: str) -> str:
    """Stream the file into the stage table; returns the sha256 of the bytes as stored."""
    digest = hashlib.sha256()
    statement = sql.SQL(
        "copy pg_temp._stage ({}) from stdin with (format csv, header true, delimiter {}, encoding {})"
    ).format(sql.SQL(", ").join(map(sql.Identifier, columns)), sql.Literal(delimiter), sql.Literal(pg_encoding))
    with cur.copy(statement) as copy:
        for index, chunk in enumerate(chunks):
            digest.update(chunk)
            copy.write(split_bom(chunk)[0] if index == 0 else chunk)
        for chunk in rest:
            digest.update(chunk)
            copy.write(chunk)
    return digest.hexdigest()


def stage_file(conn: psycopg.Connection, contract: Contract, open_stream: Callable[[], Iterator[bytes]]) -> LoadResult:
    """COPY the file into `pg_temp._stage`, trying UTF-8 then Windows-1252. Raises FileRejected."""
    stream = open_stream()
    head_chunks, header = read_header(stream)
    if not b"".join(head_chunks).strip(UTF8_BOM + b" \r\n\t"):
        raise FileRejected("empty_file", "the file is empty")
    columns = map_header(contract, header)
    # Must be set before the session's first temp table; the default 8MB would spill a large file to disk.
    conn.execute("set temp_buffers = '512MB'")
    stage_columns = sql.SQL(", ").join(sql.SQL("{} text").format(sql.Identifier(c.name)) for c in contract.columns)
    conn.execute(
        sql.SQL(
            "create temp table _stage (_row_number bigint generated always as identity, {}) on commit drop"
        ).format(stage_columns)
    )
    last_error: Exception | None = None
    for attempt, (pg_encoding, _) in enumerate(ENCODINGS):
        if attempt:
            stream = open_stream()
            head_chunks, _ = read_header(stream)
        try:
            with conn.transaction(), conn.cursor() as cur:
                sha256 = _copy_stage(cur, columns, head_chunks, stream, pg_encoding, contract.delimiter)
        except (errors.CharacterNotInRepertoire, errors.UntranslatableCharacter) as exc:
            last_error = exc
            continue
        except errors.BadCopyFileFormat as exc:
            raise FileRejected("malformed_csv", _pg_message(exc)) from exc
        rows_read = conn.execute("select count(*) from pg_temp._stage").fetchone()[0]
        if rows_read == 0:
            raise FileRejected("no_rows", "the file has a header but no data rows")
        return LoadResult(sha256=sha256, encoding=pg_encoding, rows_read=rows_read)
    raise FileRejected(
        "undecodable_text", f"the file is neither UTF-8 nor Windows-1252 text ({_pg_message(last_error)})"
    )


def _pg_message(exc: Exception | None) -> str:
    """Postgres's message plus its CONTEXT line (which names the CSV line), never the row's values."""
    diag = getattr(exc, "diag", None)
    if diag is None:
        return str(exc)
    context = (diag.context or "").split(":")[0]
    return f"{diag.message_primary}{f' ({context})' if context else ''}"


def write_rejects(conn: psycopg.Connection, contract: Contract, file_id: int, result: LoadResult) -> LoadResult:
    """One pass over the stage: a reject row for every (row, column, rule) that fails. Fills the counts."""
    cleaned = _cleaned(contract)
    rules = [(column, rule, predicate, message) for column in contract.columns
             for rule, predicate, message in _rules(column)]
    predicates = [predicate for _, _, predicate, _ in rules]
    checks = [
        sql.SQL("({}, {}, {}, {}, s.{})").format(
            predicate, sql.Literal(column.name), sql.Literal(rule), sql.Literal(message), sql.Identifier(column.name)
        )
        for column, rule, predicate, message in rules
    ]
    if checks:
        conn.execute(
            sql.SQL(
                "insert into ops.load_rejects (file_id, row_number, column_name, rule, message, raw_value) "
                "select {file_id}, s._row_number, v.column_name, v.rule, v.message, v.raw_value "
                "from (select * from {cleaned} where {any_failed}) as s "
                "cross join lateral (values {checks}) as v(failed, column_name, rule, message, raw_value) "
                "where v.failed"
            ).format(file_id=sql.Literal(file_id), cleaned=cleaned, checks=sql.SQL(", ").join(checks),
                     any_failed=sql.SQL(" or ").join(sql.SQL("({})").format(p) for p in predicates))
        )
    counts = conn.execute(
        "select rule, count(*) from ops.load_rejects where file_id = %s group by rule", (file_id,)
    ).fetchall()
    result.rejects_by_rule = {rule: n for rule, n in counts}
    result.rows_rejected = conn.execute(
        "select count(distinct row_number) from ops.load_rejects where file_id = %s", (file_id,)
    ).fetchone()[0]
    return result


def insert_valid_rows(conn: psycopg.Connection, contract: Contract, file_id: int, result: LoadResult) -> LoadResult:
    """Cast the staged rows that have no reject into the raw table, with lineage columns."""
    cleaned = _cleaned(contract)
    schema, table = contract.target_table.split(".")
    names = [sql.Identifier(c.name) for c in contract.columns]
    casts = [sql.SQL("s.{}::{}").format(sql.Identifier(c.name), sql.SQL(c.type)) for c in contract.columns]
    without_rejects = sql.SQL(
        "where not exists (select 1 from ops.load_rejects as r where r.file_id = {} and r.row_number = s._row_number)"
    ).format(sql.Literal(file_id)) if result.rows_rejected else sql.SQL("")
    cur = conn.execute(
        sql.SQL(
            "insert into {}.{} ({}, _file_id, _row_number, _loaded_at) select {}, {}, s._row_number, now() from {} {}"
        ).format(
            sql.Identifier(schema), sql.Identifier(table), sql.SQL(", ").join(names), sql.SQL(", ").join(casts),
            sql.Literal(file_id), cleaned, without_rejects,
        )
    )
    result.rows_loaded = cur.rowcount
    return result
