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
from elt.readers.kh03 import read_kh03
from elt.readers.spreadsheet import spreadsheet_to_csv
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
    month), the period is read from it as the loader reads it from the key. A workbook is held to `limits` (what
    it may cost to read) before it is read."""
    report = ValidationReport(file=name, drop_type=contract.drop_type, contract_version=contract.version)
    if contract.reader == "kh03":
        return _validate_kh03(report, data, name, limits)
    try:
        named = contract.period_in_key(name.replace("\\", "/"))
    except ValueError as exc:
        return report.refuse(FileRejected("bad_period", f"{exc} (in the file name)"))
    report.period = period_of(*named, source="file name") if named else None
    try:
        if contract.format != "csv":  # a workbook: its sheet as the CSV the loader reads
            data = spreadsheet_to_csv(contract, data, source_name=name, limits=limits)
        frame, layout = _frame(contract, data)
    except FileRejected as exc:
        return report.refuse(exc)
    report.rows_read = len(frame)
    failures: list[pd.DataFrame] = []

    typed_values: dict[str, pd.Series] = {}

    def record(mask: pd.Series, column: Column, rule: str, message: str) -> None:
        hit = mask.fillna(False).astype(bool)
        if hit.any():
            failures.append(pd.DataFrame({"row": frame.index[hit] + 1, "column": column.name, "rule": rule,
                                          "message": message}))

    required = set(contract.required_columns(layout))
    for column in contract.columns:
        values = frame[column.name]
        present = values.notna()
        if column.name in required:
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
        typed_values[column.name] = typed.where(ok)

    columns = {c.name: c for c in contract.columns}
    for check in contract.checks:  # NULL on either side (missing or not of its type) is not a failure
        left, right = typed_values[check.column], typed_values[check.other]
        both = left.notna() & right.notna()
        holds = getattr(left.where(both), COMPARE[check.op])(right.where(both))
        record(both & ~holds.fillna(True).astype(bool), columns[check.column], check.rule, check.message)

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


def _validate_kh03(report: ValidationReport, data: bytes, name: str, limits: WorkbookLimits) -> ValidationReport:
    """A KH03 workbook is checked whole by its reader (periods, totals, England row, % occupied): it loads
    entirely or not at all, so the report is valid with its row count and the quarter it establishes, or
    unreadable / off_contract with the reason."""
    try:
        book = read_kh03(data, name, limits=limits)
    except FileRejected as exc:  # Kh03Rejected
        return report.refuse(exc)
    report.period = period_of(book.period_start, book.period_end, source="workbook",
                              label=f"{book.financial_year} Q{book.quarter}")
    # as the loader counts them: the England row is stored too (five sectors)
    report.rows_read = report.rows_valid = (len(book.trust_rows) + len(book.region_rows) + len(book.specialty_rows)
                                            + len(book.england_row))
    return report
