"""A workbook sheet (.xlsx or .xls) turned into the CSV that the loader's COPY path and `elt validate` read.

Spreadsheets put a title block, blank rows and spacer columns around their table, so the header row is
found by its contents: the first of the contract's `header_search_rows` top rows whose non-empty cells are
the contract's columns (any of its layouts). Columns with an empty header cell are spacers and dropped.
Data rows are every row below the header, blank rows in the middle included (so data row n is sheet row
header + n, which is what a reject's row number means); blank rows at the end are dropped. Cells are
written as text the way a person reads them: integral numbers without `.0`, dates as ISO dates.

python-calamine reads both formats (and is several times faster than openpyxl); an .xlsx it cannot open is read
with openpyxl (`open_workbook`, shared with the KH03 reader). Pure: bytes in, bytes out.
"""

from __future__ import annotations

import csv
import io
from datetime import date, datetime, time, timedelta

from python_calamine import CalamineWorkbook

from elt.contracts import Contract
from elt.readers.csv_header import FileRejected, map_header


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
    def __init__(self, worksheet) -> None:
        self._worksheet = worksheet

    def to_python(self, skip_empty_area: bool = False) -> list[list[object]]:
        return [list(row) for row in self._worksheet.iter_rows(values_only=True)]


class _OpenpyxlWorkbook:
    """An .xlsx read by openpyxl, with the part of python-calamine's interface the readers use: the fallback
    for a workbook calamine cannot open (several times slower; the same cells)."""

    def __init__(self, data: bytes) -> None:
        from openpyxl import load_workbook

        self._book = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
        self.sheet_names = list(self._book.sheetnames)

    def get_sheet_by_name(self, name: str) -> _OpenpyxlSheet:
        return _OpenpyxlSheet(self._book[name])


Workbook = CalamineWorkbook | _OpenpyxlWorkbook  # what open_workbook gives: sheet_names, get_sheet_by_name()


def open_workbook(data: bytes, source_name: str, *, what: str = "xlsx/xls", engine: str = "calamine",
                  rejected: type[FileRejected] = FileRejected) -> Workbook:
    """The workbook, read by python-calamine (.xlsx and .xls, fast); an .xlsx calamine cannot open is tried with
    openpyxl (`engine="openpyxl"` asks for it directly). Neither: `rejected("unreadable_workbook", ...)`."""
    if engine == "openpyxl":
        return _OpenpyxlWorkbook(data)
    try:
        return CalamineWorkbook.from_filelike(io.BytesIO(data))
    except Exception as exc:  # noqa: BLE001 - calamine raises several types for a damaged file
        problem = f"{type(exc).__name__}: {str(exc)[:200]}"
        if data[:4] == b"PK\x03\x04":  # a zip, so perhaps an .xlsx that openpyxl can read
            try:
                return _OpenpyxlWorkbook(data)
            except Exception as fallback:  # noqa: BLE001 - openpyxl too raises several types
                problem += f"; openpyxl: {type(fallback).__name__}: {str(fallback)[:200]}"
        raise rejected("unreadable_workbook", f"{source_name} is not a readable {what} workbook ({problem})") from exc


def _read_rows(contract: Contract, data: bytes, source_name: str) -> tuple[str, list[list[object]]]:
    workbook = open_workbook(data, source_name, what=contract.format)
    names = workbook.sheet_names
    wanted = contract.sheet_settings.sheet
    if wanted is None:
        if not names:
            raise FileRejected("missing_sheet", f"{source_name} has no sheets")
        wanted = names[0]
    elif wanted not in names:
        raise FileRejected("missing_sheet", f"{source_name} has no sheet {wanted!r}; its sheets: {', '.join(names)}")
    try:
        rows = workbook.get_sheet_by_name(wanted).to_python(skip_empty_area=False)
    except Exception as exc:  # noqa: BLE001
        raise FileRejected("unreadable_workbook", f"sheet {wanted!r} of {source_name} cannot be read ({exc})") from exc
    return wanted, rows


def spreadsheet_to_csv(contract: Contract, data: bytes, *, source_name: str = "the workbook") -> bytes:
    """The contract's sheet as UTF-8 CSV: the header row found by its contents, then every data row.

    Raises FileRejected: unreadable_workbook, missing_sheet, missing_header (naming the closest row and
    what it lacks), no_rows.
    """
    sheet, rows = _read_rows(contract, data, source_name)
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
                       labels=[_column_letter(position) for position in kept])
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


def _column_letter(index: int) -> str:
    """Excel's name of a 0-based column: 0 -> A, 26 -> AA."""
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(ord("A") + rest) + letters
    return letters


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
