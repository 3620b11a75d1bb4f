"""A workbook sheet (.xlsx or .xls) turned into the CSV that the loader's COPY path and `elt validate` read.

Spreadsheets put a title block, blank rows and spacer columns around their table, so the header row is
found by its contents: the first of the contract's `header_search_rows` top rows whose non-empty cells are
the contract's columns (any of its layouts). Columns with an empty header cell are spacers and dropped.
Data rows are every row below the header, blank rows in the middle included (so data row n is sheet row
header + n, which is what a reject's row number means); blank rows at the end are dropped. Cells are
written as text the way a person reads them: integral numbers without `.0`, dates as ISO dates.

python-calamine reads both formats (and is several times faster than openpyxl); an .xlsx it cannot open is read
with openpyxl (`open_workbook`, shared with the KH03 reader). Neither engine sees a workbook before
`check_workbook` (elt/readers/workbook_guard.py) has bounded what it may cost under `WorkbookLimits`; openpyxl,
which iterates in Python, also counts rows and cells and watches the clock as it goes. calamine reads an .xlsx
from the check's uncompressed copy of its parts, in a nameless temporary file, when one could be made
(decision 0012). Otherwise pure: bytes in, bytes out.
"""

from __future__ import annotations

import csv
import io
import re
import tempfile
import time as clock
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import BinaryIO

from python_calamine import CalamineWorkbook

from elt.contracts import Contract
from elt.readers.csv_header import FileRejected, map_header
from elt.readers.workbook_guard import DEFAULT_LIMITS, WorkbookLimits, check_workbook, column_letters, over


def cell_text(value: object) -> str:
    """One cell as the text a sender meant: '' for empty, 12 not 12.0, 2026-11-20 for a date."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)
    if isinstance(value, datetime):
        return value.date().isoformat() if value.time() == time() else value.isoformat(sep=" ")
    if isinstance(value, (date, time)):
        return value.isoformat()
    if isinstance(value, timedelta):
        return str(value)
    return str(value)


def _csv_line(cells: list[str]) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(cells)
    return out.getvalue().encode("utf-8")


class _OpenpyxlSheet:
    """One sheet read row by row, held to the limits as it goes: openpyxl pads each row to the sheet's declared
    width and runs in Python, so rows, columns, cells and seconds are counted here, not trusted."""

    def __init__(self, worksheet, name: str, limits: WorkbookLimits, deadline: float) -> None:
        self._worksheet, self._name, self._limits, self._deadline = worksheet, name, limits, deadline

    def to_python(self, skip_empty_area: bool = False) -> list[list[object]]:
        rows: list[list[object]] = []
        cells = 0
        for row in self._worksheet.iter_rows(values_only=True):
            cells += len(row)
            self._check(len(rows) + 1, len(row), cells)
            rows.append(list(row))
        return rows

    def _check(self, row: int, width: int, cells: int) -> None:
        limits, where = self._limits, f"sheet {self._name!r}"
        if row > limits.max_rows:
            raise over("sheet_too_large", f"{where} goes on past row {limits.max_rows:,}", "max_rows", limits, _SHRINK)
        if width > limits.max_columns:
            raise over("sheet_too_large", f"{where} is {width:,} columns wide at row {row:,}", "max_columns",
                       limits, _SHRINK)
        if cells > limits.max_cells:
            raise over("sheet_too_large", f"{where} holds more than {cells:,} cells by row {row:,}", "max_cells",
                       limits, _SHRINK)
        if clock.monotonic() > self._deadline:
            raise over("workbook_too_slow", f"reading {where} took too long (stopped at row {row:,})", "max_seconds",
                       limits, "save the workbook again from Excel: the slow reader only reads files the fast "
                       "one cannot open")


_SHRINK = "delete the unused rows and columns and save it again, or split the sheet"


class _OpenpyxlWorkbook:
    """An .xlsx read by openpyxl, with the part of python-calamine's interface the readers use: the fallback
    for a workbook calamine cannot open (several times slower; the same cells)."""

    def __init__(self, data: bytes, limits: WorkbookLimits) -> None:
        from openpyxl import load_workbook

        self._limits = limits
        self._deadline = clock.monotonic() + limits.max_seconds
        self._book = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
        self.sheet_names = list(self._book.sheetnames)

    def get_sheet_by_name(self, name: str) -> _OpenpyxlSheet:
        return _OpenpyxlSheet(self._book[name], name, self._limits, self._deadline)


Workbook = CalamineWorkbook | _OpenpyxlWorkbook  # what open_workbook gives: sheet_names, get_sheet_by_name()
QUOTED = re.compile(r"""'[^']*'|"[^"]*"|`[^`]*`""")


def _engine_failure(exc: BaseException) -> str | None:
    """What an engine said about a file it could not read, fit to show: the exception type and its message
    with quoted text removed (a parser may quote the cell it choked on) and cut short. None for exceptions
    that are not about the file (KeyboardInterrupt, SystemExit), which must go on. A Rust panic inside
    python-calamine arrives as pyo3's PanicException, a BaseException: about the file too."""
    if not isinstance(exc, Exception) and type(exc).__name__ != "PanicException":
        return None
    return f"{type(exc).__name__}: {QUOTED.sub('...', str(exc))[:160]}".rstrip(": ")


def open_workbook(data: bytes, source_name: str, *, what: str = "xlsx/xls", engine: str = "calamine",
                  rejected: type[FileRejected] = FileRejected, limits: WorkbookLimits = DEFAULT_LIMITS,
                  copy_to_disk: bool = False) -> Workbook:
    """The workbook, once `check_workbook` has found its cost within `limits` (else the refusal it raises, as
    `rejected`), read by python-calamine (.xlsx and .xls, fast); an .xlsx calamine cannot open is tried with
    openpyxl (`engine="openpyxl"` asks for it directly). Neither: `rejected("unreadable_workbook", ...)`.

    With `copy_to_disk` (only for a drop type without personal data: the copy may reach the disk), calamine reads
    an .xlsx from the check's copy of its parts, stored uncompressed in a nameless temporary file
    (workbook_guard._StoredCopy), when one could be made: it then neither inflates the parts again nor holds the
    whole file in memory. Otherwise, or if it cannot open that copy, it reads `data`."""
    with _copy_file(data, engine, wanted=copy_to_disk) as copy:
        try:
            copied = check_workbook(data, source_name, limits, copy_to=copy)
        except FileRejected as refusal:
            raise rejected(refusal.rule, refusal.message) from None
        if engine == "openpyxl":
            return _open_openpyxl(data, source_name, what, rejected, limits, problem=None)
        if copied and copy is not None:
            try:  # calamine opens the file again by its /proc path and holds it open until the workbook goes
                return CalamineWorkbook.from_path(f"{_FD_PATHS}/{copy.fileno()}")
            except BaseException as exc:  # noqa: BLE001 - any failure: read the original below, as without a copy
                if _engine_failure(exc) is None:
                    raise
    try:
        return CalamineWorkbook.from_filelike(io.BytesIO(data))
    except BaseException as exc:  # noqa: BLE001 - calamine raises several types (and panics) for a damaged file
        problem = _engine_failure(exc)
        if problem is None:
            raise
    if data[:4] != b"PK\x03\x04":  # not a zip, so not an .xlsx that openpyxl could read
        raise rejected("unreadable_workbook", f"{source_name} is not a readable {what} workbook ({problem})")
    return _open_openpyxl(data, source_name, what, rejected, limits, problem=problem)


_FD_PATHS = Path("/proc/self/fd")  # Linux: an open file's path, even when it has no name


@contextmanager
def _copy_file(data: bytes, engine: str, *, wanted: bool) -> Iterator[BinaryIO | None]:
    """A nameless temporary file (gone when closed, or when the process dies) for the check's stored copy of an
    .xlsx; None where not `wanted` (the drop type may hold personal data), where calamine would not read it (an
    .xls, openpyxl asked for), where no path can name it (no /proc) or where none can be made (then calamine
    reads the original)."""
    if not wanted or engine == "openpyxl" or data[:4] != b"PK\x03\x04" or not _FD_PATHS.is_dir():
        yield None
        return
    try:
        file = tempfile.TemporaryFile()
    except OSError:
        yield None
        return
    with file:
        yield file  # type: ignore[misc]


def _open_openpyxl(data: bytes, source_name: str, what: str, rejected: type[FileRejected], limits: WorkbookLimits,
                   *, problem: str | None) -> _OpenpyxlWorkbook:
    try:
        return _OpenpyxlWorkbook(data, limits)
    except Exception as fallback:  # noqa: BLE001 - openpyxl raises several types
        said = f"openpyxl: {_engine_failure(fallback)}"
        problem = f"{problem}; {said}" if problem else said
        raise rejected("unreadable_workbook", f"{source_name} is not a readable {what} workbook ({problem})") from None


def sheet_rows(workbook: Workbook, name: str, source_name: str, *,
               rejected: type[FileRejected] = FileRejected) -> list[list[object]]:
    """Every row of sheet `name` (the area from A1 included). A sheet the engine cannot read, or one that breaks
    a limit while openpyxl reads it, is `rejected(rule, ...)`."""
    try:
        return workbook.get_sheet_by_name(name).to_python(skip_empty_area=False)
    except FileRejected as refusal:
        raise rejected(refusal.rule, f"{source_name}: {refusal.message}") from None
    except BaseException as exc:  # noqa: BLE001 - engines raise several types (and calamine panics)
        problem = _engine_failure(exc)
        if problem is None:
            raise
        raise rejected("unreadable_workbook", f"{source_name}, sheet {name!r} cannot be read ({problem})") from None


def _read_rows(contract: Contract, data: bytes, source_name: str,
               limits: WorkbookLimits) -> tuple[str, list[list[object]]]:
    workbook = open_workbook(data, source_name, what=contract.format, limits=limits,
                             copy_to_disk=not contract.personal_data)
    names = workbook.sheet_names
    wanted = contract.sheet_settings.sheet
    if wanted is None:
        if not names:
            raise FileRejected("missing_sheet", f"{source_name} has no sheets")
        wanted = names[0]
    elif wanted not in names:
        raise FileRejected("missing_sheet", f"{source_name} has no sheet {wanted!r}; its sheets: {', '.join(names)}")
    return wanted, sheet_rows(workbook, wanted, source_name)


def spreadsheet_to_csv(contract: Contract, data: bytes, *, source_name: str = "the workbook",
                       limits: WorkbookLimits = DEFAULT_LIMITS) -> bytes:
    """The contract's sheet as UTF-8 CSV: the header row found by its contents, then every data row.

    Raises FileRejected: workbook_too_large, sheet_too_large, zip_bomb, unsupported_workbook, workbook_too_slow
    (the workbook costs more than `limits`), unreadable_workbook, missing_sheet, missing_header (naming the
    closest row and what it lacks), no_rows.
    """
    sheet, rows = _read_rows(contract, data, source_name, limits)
    texts = [[cell_text(value) for value in row] for row in rows]
    search = contract.sheet_settings.header_search_rows
    closest: tuple[int, int, str] | None = None  # (cells recognised, sheet row, why it is not the header)
    known = {name for layout in contract.resolved_layouts() for name in contract.header_lookup(layout)}
    for index, cells in enumerate(texts[:search]):
        kept = [position for position, text in enumerate(cells) if text.strip()]
        if not kept:
            continue
        try:
            map_header(contract, _csv_line([cells[position] for position in kept]),
                       labels=[column_letters(position + 1) for position in kept])
        except FileRejected as exc:
            recognised = sum(1 for position in kept if cells[position].strip().lower() in known)
            if recognised and (closest is None or recognised > closest[0]):
                closest = (recognised, index + 1, exc.message)
            continue
        return _table(texts[index + 1:], kept, header=[cells[position] for position in kept], sheet=sheet)
    where = f"the top {search} rows of sheet {sheet!r}"
    if closest is None:
        raise FileRejected("missing_header", f"no header row with the contract's columns in {where}")
    raise FileRejected("missing_header", f"no header row in {where}; the closest is row {closest[1]}: {closest[2]}")




def _table(rows: list[list[str]], kept: list[int], *, header: list[str], sheet: str) -> bytes:
    body = [[row[position] if position < len(row) else "" for position in kept] for row in rows]
    while body and not any(cell.strip() for cell in body[-1]):
        body.pop()
    if not body:
        raise FileRejected("no_rows", f"sheet {sheet!r} has a header but no data rows")
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(body)
    return out.getvalue().encode("utf-8")
