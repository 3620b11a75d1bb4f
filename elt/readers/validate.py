"""Check a local file against its contract without a database: what `elt validate` runs.

The rules are the loader's rules (elt/warehouse/loader.py applies them in SQL at load time); here they
run vectorized with pandas over the whole file, so a sender can check a file before dropping it. A test
holds the two implementations to the same rejects on the same files.
"""

from __future__ import annotations

import csv
import io
import re
import warnings
from dataclasses import asdict, dataclass, field
from datetime import date

import pandas as pd

from elt.contracts import Column, Contract, Layout
from elt.readers import reader_for
from elt.readers.base import BytesSource, Period, Reader
from elt.readers.csv_header import (
    FileRejected,
    blank,
    check_line_ends,
    check_text,
    field_size_limit,
    map_header,
    read_header,
    split_bom,
)
from elt.readers.workbook_guard import DEFAULT_LIMITS, WorkbookLimits

INTEGER_RANGES = {"smallint": (-32768, 32767), "integer": (-(2**31), 2**31 - 1), "bigint": (-(2**63), 2**63 - 1)}
ISO_DATE = r"^\d{4}-\d{2}-\d{2}$"


# What `status` says, from best to worst. A file that cannot be read is `unreadable`; a file that was
# read but breaks a whole-file rule of its contract (its header, its period, a KH03 total) is `off_contract`
# (FileRejected.kind says which); both would be quarantined. `refused`: too many bad rows, the whole file would be
# refused. `has_rejects`: it would load, without its bad rows. `valid`: it would load whole.
STATUSES = ("valid", "has_rejects", "refused", "off_contract", "unreadable")


@dataclass
class ValidationReport:
    file: str
    drop_type: str
    contract_version: int
    status: str = "valid"  # one of STATUSES
    rows_read: int = 0
    rows_valid: int = 0
    rows_rejected: int = 0
    # The reporting period the file establishes: {"start", "end", "label", "source"}; None when it names none.
    period: dict | None = None
    rejects: list[dict] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)

    def refuse(self, exc: FileRejected) -> ValidationReport:
        self.status, self.errors = exc.kind, [{"rule": exc.rule, "message": exc.message}]
        return self


def period_of(start: date, end: date, *, source: str, label: str | None = None) -> dict:
    """The report's `period`: a day ('2026-11-14'), a calendar month ('2024-01') or the label given (a quarter)."""
    if label is None:
        label = start.isoformat() if start == end else start.strftime("%Y-%m") if start.day == 1 else f"{start} to {end}"
    return {"start": start.isoformat(), "end": end.isoformat(), "label": label, "source": source}


def _rows(text: str, contract: Contract) -> list[list[str]]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=contract.delimiter)
    try:
        with field_size_limit(len(text) + 1):
            return list(reader)[1:]
    except csv.Error:  # the csv module's messages name no value, but a fixed text is sure not to
        raise FileRejected("malformed_csv", f"line {reader.line_num} is not valid CSV") from None


def _frame(contract: Contract, data: bytes) -> tuple[pd.DataFrame, Layout]:
    """(canonical values of every data row, the sender layout)."""
    if blank(data):
        raise FileRejected("empty_file", "the file is empty")
    _, header = read_header(iter([data]))  # the loader's bounded header read, CR-only line ends included
    match = map_header(contract, header)
    columns = match.columns
    text = split_bom(data)[0].decode(check_text(data))
    check_line_ends(text)
    rows = _rows(text, contract)
    width = match.width or len(columns)
    for number, row in enumerate(rows, start=1):
        if len(row) != width:
            raise FileRejected("malformed_csv", f"row {number} has {len(row)} fields, the header has {width}")
    if not rows:
        raise FileRejected("no_rows", "the file has a header but no data rows")
    if match.ignores_columns:  # a wide layout: the columns it ignores are dropped, as the loader drops them
        rows = [[row[i] for i in match.kept] for row in rows]
    frame = pd.DataFrame(rows, columns=columns, dtype="string")
    for name in contract.column_names:
        if name not in frame:
            frame[name] = pd.Series([pd.NA] * len(frame), dtype="string")
    frame = frame.apply(lambda col: col.str.strip())
    nulls = {v.upper() for v in contract.null_values}
    frame = frame.mask(frame.apply(lambda col: col.str.upper().isin(nulls)))
    for column in contract.columns:  # the sender's spelling rewritten to the canonical one, as the loader does
        rewrite = contract.rewrite(match.layout, column)
        if rewrite:
            pattern, replacement, every = rewrite
            frame[column.name] = frame[column.name].str.replace(
                re.compile(pattern), lambda m, r=replacement: m.expand(r), n=-1 if every else 1, regex=True)
    return frame, match.layout


def _typed(column: Column, values: pd.Series) -> tuple[pd.Series, pd.Series]:
    """(is the value a valid <type>, the value as a comparable type) for non-null values."""
    if column.type in INTEGER_RANGES:
        low, high = INTEGER_RANGES[column.type]
        shaped = values.str.fullmatch(r"[+-]?\d+").fillna(False).astype(bool)
        numbers = pd.to_numeric(values.where(shaped), errors="coerce")
        return shaped & numbers.between(low, high), numbers
    if column.type in {"numeric", "double precision"}:
        numbers = pd.to_numeric(values, errors="coerce")
        return numbers.notna(), numbers
    if column.type == "date":
        dates = pd.to_datetime(values.where(values.str.fullmatch(ISO_DATE).fillna(False).astype(bool)),
                               format="%Y-%m-%d", errors="coerce")
        return dates.notna(), dates
    if column.type == "boolean":
        ok = values.str.lower().isin({"t", "f", "true", "false", "y", "n", "yes", "no", "on", "off", "1", "0"})
        return ok, values
    return pd.Series(True, index=values.index), values


def _bound(column: Column, value) -> object:
    if value == "today":
        return pd.Timestamp(date.today())
    return pd.Timestamp(value) if isinstance(value, date) or column.type == "date" else value


COMPARE = {"<": "lt", "<=": "le", ">": "gt", ">=": "ge", "=": "eq", "<>": "ne"}


def validate_bytes(contract: Contract, data: bytes, *, name: str = "<bytes>",
                   limits: WorkbookLimits = DEFAULT_LIMITS) -> ValidationReport:
    """`name` is the file's name or path: for a drop type whose key names its period (a Medilink day, a claims
    month), the period is read from it as the loader reads it from the key. The file is read by its contract's
    reader as the loader reads it (a workbook held to `limits`, what it may cost to read, before it is read), and
    the rules run over every table it gives, as the loader's write_rejects does."""
    report = ValidationReport(file=name, drop_type=contract.drop_type, contract_version=contract.version)
    reader = reader_for(contract)
    try:
        report.period = _shown(reader.period(contract, name.replace("\\", "/"), within="file name"), reader)
        read = reader.tables(contract, BytesSource(name, data), limits=limits)
        tables = [(table.contract, *_frame(table.contract, b"".join(table.chunks()))) for table in read.tables]
    except FileRejected as exc:
        return report.refuse(exc)
    if read.period is not None:
        report.period = _shown(read.period, reader)
    report.rows_read = sum(len(frame) for _, frame, _ in tables)
    return _verdict(report, contract, [rejects for table in tables for rejects in _rejects(*table)])


def _shown(period: Period | None, reader: Reader) -> dict | None:
    """The report's `period`, saying where it was found: the file name, or the file itself (`the workbook`)."""
    if period is None:
        return None
    return period_of(period.start, period.end, source="file name" if period.source == "key" else reader.noun,
                     label=period.label)


def _rejects(contract: Contract, frame: pd.DataFrame, layout: Layout) -> list[pd.DataFrame]:
    """(row, column, rule, message) of every rule a row of one table breaks, as the loader writes them."""
    failures: list[pd.DataFrame] = []

    def record(mask: pd.Series, column: Column, rule: str, message: str) -> None:
        hit = mask.fillna(False).astype(bool)
        if hit.any():
            failures.append(pd.DataFrame({"row": frame.index[hit] + 1, "column": column.name, "rule": rule,
                                          "message": message}))

    required = set(contract.required_columns(layout))
    typed_values = {column.name: _column_rules(contract, layout, column, frame[column.name], record,
                                               required=column.name in required)
                    for column in contract.columns}
    columns = {c.name: c for c in contract.columns}
    for check in contract.checks:  # NULL on either side (missing or not of its type) is not a failure
        left, right = typed_values[check.column], typed_values[check.other]
        both = left.notna() & right.notna()
        holds = getattr(left.where(both), COMPARE[check.op])(right.where(both))
        record(both & ~holds.fillna(True).astype(bool), columns[check.column], check.rule, check.message)
    return failures


def _column_rules(contract: Contract, layout: Layout, column: Column, values: pd.Series, record, *,
                  required: bool) -> pd.Series:
    """Records the rules one column's values break; returns the values that are valid, typed (else NA).
    `required`: the column must be filled in this layout (a layout may not fill some required columns)."""
    present = values.notna()
    if required:
        record(~present, column, "required", f"{column.name} is required")
    valid, typed = _typed(column, values)
    valid = valid.fillna(False).astype(bool)
    if column.type != "text":
        record(present & ~valid, column, "type", contract.type_message(layout, column))
    if column.allowed:
        allowed = {a.upper() for a in column.allowed}
        record(present & ~values.str.upper().isin(allowed), column, "allowed",
               f"{column.name} must be one of {', '.join(column.allowed)}")
    if column.pattern:
        with warnings.catch_warnings():  # pandas warns about groups in the pattern; only the match matters
            warnings.simplefilter("ignore", UserWarning)
            matches = values.str.contains(re.compile(column.pattern), regex=True)
        record(present & ~matches.fillna(False).astype(bool), column, "pattern",
               f"{column.name} does not match {column.pattern}")
    ok = present & valid
    if column.min is not None:
        record(ok & (typed.where(ok) < _bound(column, column.min)), column, "range",
               f"{column.name} must be at least {column.min}")
    if column.max is not None:
        record(ok & (typed.where(ok) > _bound(column, column.max)), column, "range",
               f"{column.name} must be at most {column.max}")
    return typed.where(ok)


def _verdict(report: ValidationReport, contract: Contract, failures: list[pd.DataFrame]) -> ValidationReport:
    """The rejects in row order, and the status they give the file. Rows are counted as the loader counts them:
    distinct row numbers of the file (which a file of several tables shares between them)."""
    rejects = pd.concat(failures).sort_values(["row", "column", "rule"]) if failures else pd.DataFrame()
    report.rejects = [{k: (int(v) if k == "row" else v) for k, v in r.items()} for r in rejects.to_dict("records")]
    report.rows_rejected = int(rejects["row"].nunique()) if failures else 0
    report.rows_valid = report.rows_read - report.rows_rejected
    if report.rows_rejected / report.rows_read > contract.max_reject_share:
        report.status = "refused"
        report.errors = [{"rule": "reject_share", "message": (
            f"{report.rows_rejected} of {report.rows_read} rows break the contract, more than the "
            f"{contract.max_reject_share:.0%} allowed: the whole file would be refused")}]
    elif report.rows_rejected:
        report.status = "has_rejects"
    return report
