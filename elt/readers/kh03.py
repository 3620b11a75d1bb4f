"""NHS England KH03 "Beds Open Overnight" workbooks turned into typed, checked rows.

KH03 is published quarterly as a workbook whose layout has drifted for fifteen years: sheets change
order (`Data Quality` first from 2024-25), the header band moves (older eras put the title block in
column A), `Total ` carries a trailing space, the sector `Learning Disabilities` became `Learning
Disability` in 2025-26, org codes grew from three to five characters, and revised workbooks append
re-submitted trusts after the sorted rows. The generic sheet-to-CSV reader cannot cope with a
three-group header band, so this reader finds everything by its contents:

- a sheet by its name (`NHS Trust by Sector`, `Region by Sector`, `Occupied by Specialty`), in any order;
  a workbook holding only some of them gives only those; one holding none is rejected;
- the header row as the row holding `Year` and `Period End`; the group labels (`Available`, `Occupied`,
  `% Occupied`) on the row above, each label sitting over the first column of its block;
- the period from the workbook itself: the title block's `Period:` (`July to September 2020`) and every
  data row's `Year` (`2020-21`) and `Period End` (`September`). All of them, on every sheet, must agree.

File names: many carry no period (`Beds-Open-Overnight-Web_File-Final-DE5WC.xlsx`). When one does, it
must agree with the workbook. NHS England names since about 2022 say `Q3-2024-25`: quarter 3 of the
financial year 2024-25 (October to December 2024), confirmed by the 2024-25 and 2025-26 files. The
older `2021-Q1-...` name holds April to June 2020 in its title block and `Year` column: `2021` is the
financial year 2020-21 written without its dash ("20" "21"), not calendar 2021 (whose first quarter would
be January to March 2021, i.e. Q4 of 2020-21). So a four-digit year before `-Qn` is read as two
consecutive two-digit years; one that is not (`2020-Q1`) could be calendar 2020 or the year 2019-20
ends in, and the reader refuses to guess: `unclear_file_name_period`. A `Qn` token it cannot place at
all gets the same rejection.

Duplicates: a revised workbook may append a re-submitted trust after the sorted rows. If the same org
(or region) code appears twice on a sheet, the later row wins, because the appended row is the
re-submission; its position in the output is that of the first appearance, and the code is listed in
`Kh03Workbook.replaced_codes`. The England check sums the rows kept.

Checks (rejections name the sheet, Excel row and column): every `Total` is the sum of its four sectors
within 0.5 bed; the England row is the sum of the other rows per column within 0.5 bed per row summed;
`% Occupied` agrees with occupied / available within 0.005 where available > 0 (`-` means no beds and
reads as None; `-` beside available beds is rejected). Bed counts are daily averages: kept as Decimal
exactly as stored (the float's shortest repr), never rounded.

Pure: bytes in, frozen dataclasses out. python-calamine reads .xlsx and .xls; an .xlsx it cannot open is
read with openpyxl instead. What a workbook may cost to read (size, inflated bytes, rows, columns, cells,
seconds) is bounded first by `WorkbookLimits`, which the caller passes (the loader, the API and `elt validate`
pass their settings').
"""

from __future__ import annotations

import gc
import math
import re
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from itertools import compress, islice, repeat
from operator import add, gt, itemgetter, sub, truediv
from typing import NamedTuple

from elt.readers.csv_header import FileRejected
from elt.readers.spreadsheet import Workbook, cell_text, open_workbook, sheet_rows
from elt.readers.workbook_guard import DEFAULT_LIMITS, WorkbookLimits, column_letters

TRUST_SHEET = "NHS Trust by Sector"
REGION_SHEET = "Region by Sector"
SPECIALTY_SHEET = "Occupied by Specialty"
KH03_SHEETS = (TRUST_SHEET, REGION_SHEET, SPECIALTY_SHEET)

SECTORS = ("Total", "General & Acute", "Learning Disabilities", "Maternity", "Mental Illness")
_SECTOR_BY_HEADER = {
    "total": "Total",
    "general & acute": "General & Acute",
    "general and acute": "General & Acute",
    "learning disabilities": "Learning Disabilities",
    "learning disability": "Learning Disabilities",  # 2025-26 onwards
    "maternity": "Maternity",
    "mental illness": "Mental Illness",
}
_GROUP_BY_LABEL = {"available": "available", "occupied": "occupied", "% occupied": "pct_occupied"}
_REGION_CODE_HEADERS = {"region code", "sha code", "at code", "area team code", "commissioning region code"}
_ORG_CODE_HEADERS = {"org code", "organisation code", "provider code", "trust code"}

TOTAL_TOLERANCE = Decimal("0.5")  # beds: a Total against the sum of its four sectors
ENGLAND_TOLERANCE_PER_ROW = Decimal("0.5")  # beds per summed row: England against the sum of the rows
PCT_TOLERANCE = Decimal("0.005")  # fraction: % Occupied against occupied / available

_MONTHS = {
    name: number
    for number, names in enumerate(
        [
            ("january", "jan"), ("february", "feb"), ("march", "mar"), ("april", "apr"), ("may",),
            ("june", "jun"), ("july", "jul"), ("august", "aug"), ("september", "sep", "sept"),
            ("october", "oct"), ("november", "nov"), ("december", "dec"),
        ],
        start=1,
    )
    for name in names
}
_QUARTER_BY_END_MONTH = {6: 1, 9: 2, 12: 3, 3: 4}
_QUARTER_BY_START_MONTH = {4: 1, 7: 2, 10: 3, 1: 4}


class Kh03Rejected(FileRejected):
    """The workbook cannot be loaded as KH03: `rule` (also `reason_code`) for the ledger, `message` for people. A
    FileRejected, so the loader quarantines it and the API refuses it like any file that breaks its contract."""

    @property
    def reason_code(self) -> str:
        return self.rule

    def __str__(self) -> str:
        return f"{self.rule}: {self.message}"


def _as_decimal(value: float | None) -> Decimal | None:
    return None if value is None else Decimal(repr(value))


def _decimal_of(field: str, doc: str) -> property:
    """A row's count as Decimal: the stored double's shortest repr, exactly the decimal that was published."""
    return property(lambda row: _as_decimal(getattr(row, field)), doc=doc)


_AVAILABLE = _decimal_of("available_value", "Average daily beds available, as Decimal.")
_OCCUPIED = _decimal_of("occupied_value", "Average daily beds occupied, as Decimal.")
_PCT_OCCUPIED = _decimal_of("pct_occupied_value", "Occupied / available as published, as Decimal; None for '-'.")


class Kh03TrustRow(NamedTuple):
    """One trust, one sector: average daily beds available and occupied over the quarter.

    The `*_value` fields hold the doubles the workbook stores; `available`, `occupied` and `pct_occupied` give
    them as Decimal, the double's shortest repr: exactly the decimal NHS England published, never rounded.
    (Typing every one of half a million counts as Decimal while reading cost more than reading the file; a
    loader writes `repr(value)`, the same digits.)"""

    org_code: str
    org_name: str
    region_code: str
    sector: str
    available_value: float
    occupied_value: float
    pct_occupied_value: float | None
    sheet_row: int

    available = _AVAILABLE
    occupied = _OCCUPIED
    pct_occupied = _PCT_OCCUPIED


class Kh03RegionRow(NamedTuple):
    """One region, one sector (counts as in Kh03TrustRow)."""

    region_code: str
    region_name: str
    sector: str
    available_value: float
    occupied_value: float
    pct_occupied_value: float | None
    sheet_row: int

    available = _AVAILABLE
    occupied = _OCCUPIED
    pct_occupied = _PCT_OCCUPIED


class Kh03EnglandRow(NamedTuple):
    """England, one sector (from `NHS Trust by Sector`, else from `Region by Sector`; counts as in Kh03TrustRow)."""

    sector: str
    available_value: float
    occupied_value: float
    pct_occupied_value: float | None

    available = _AVAILABLE
    occupied = _OCCUPIED
    pct_occupied = _PCT_OCCUPIED


class Kh03SpecialtyRow(NamedTuple):
    """One trust, one consultant specialty: average daily beds occupied (as in Kh03TrustRow)."""

    org_code: str
    org_name: str
    region_code: str
    specialty_code: str
    specialty_name: str
    occupied_value: float
    sheet_row: int

    occupied = _OCCUPIED


@dataclass(frozen=True)
class Kh03Workbook:
    financial_year: str  # "2020-21"
    quarter: int  # 1..4 of the financial year; Q1 = April to June
    period_start: date
    period_end: date
    published: date | str | None  # a date when the title block's text parses, else the text as found
    trust_rows: tuple[Kh03TrustRow, ...]
    region_rows: tuple[Kh03RegionRow, ...]
    specialty_rows: tuple[Kh03SpecialtyRow, ...]
    england_row: tuple[Kh03EnglandRow, ...]  # one per sector, empty when neither sector sheet is present
    revised: date | str | None = None
    sheets: tuple[str, ...] = ()  # the KH03 sheets found, in workbook order
    replaced_codes: tuple[str, ...] = ()  # "sheet: code" for each code whose earlier row a later one replaced

    def england(self, sector: str) -> Kh03EnglandRow:
        for row in self.england_row:
            if row.sector == sector:
                return row
        raise KeyError(sector)


# ---------------------------------------------------------------------------------------------- helpers




def _norm(value: object) -> str:
    return " ".join(cell_text(value).split()).lower()


def _cell(row: Sequence[object], index: int) -> object:
    return row[index] if index < len(row) else None


def _where(source: str, sheet: str, row: int, column: int | None = None, header: str | None = None) -> str:
    place = f"{source}, sheet {sheet!r}, row {row}"
    if column is not None:
        place += f", column {column_letters(column + 1)}"
        if header:
            place += f" ({header})"
    return place


def _number(value: object) -> float | None:
    """A numeric cell as the double the workbook stores; None for an empty cell; ValueError for anything else.
    Counts stay doubles while the sheet is read and checked, and become Decimal (the double's shortest repr,
    exactly the decimal that was published) only in the rows handed out: typing 1.5 million cells as Decimal
    up front cost more than reading the workbook."""
    if value.__class__ is float:
        return value  # type: ignore[return-value]
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, int):
        return float(value)
    if isinstance(value, str):
        try:
            result = Decimal(value.strip().replace(",", ""))
        except InvalidOperation as exc:
            raise ValueError(value) from exc
        if not result.is_finite():
            raise ValueError(value)
        return float(result)
    raise ValueError(value)


def _parse_date_text(text: str) -> date | str | None:
    text = text.strip()
    if not text:
        return None
    try:
        return date.fromisoformat(text[:10]) if re.fullmatch(r"\d{4}-\d{2}-\d{2}( 00:00:00)?", text) else _long_date(text)
    except ValueError:
        return text


def _long_date(text: str) -> date | str:
    """`19th November 2020` as a date; any other text back as it is."""
    match = re.fullmatch(r"(\d{1,2})(?:st|nd|rd|th)?\s+([A-Za-z]+)\s+(\d{4})", text)
    if match and match.group(2).lower() in _MONTHS:
        return date(int(match.group(3)), _MONTHS[match.group(2).lower()], int(match.group(1)))  # ValueError: text
    return text


# ----------------------------------------------------------------------------------------------- period


@dataclass(frozen=True)
class _Period:
    financial_year: str
    quarter: int

    def __str__(self) -> str:
        return f"Q{self.quarter} {self.financial_year}"


def _financial_year(start_year: int) -> str:
    return f"{start_year}-{(start_year + 1) % 100:02d}"


def _period_from_title(text: str) -> _Period:
    """`July to September 2020` -> Q2 2020-21. Raises ValueError when the text is not one quarter."""
    match = re.fullmatch(
        r"([A-Za-z]+)(?:\s+(\d{4}))?\s*(?:to|-|–)\s*([A-Za-z]+)\s+(\d{4})", " ".join(text.split())
    )
    if not match:
        raise ValueError(text)
    start_name, start_year, end_name, end_year = match.groups()
    start, end = _MONTHS.get(start_name.lower()), _MONTHS.get(end_name.lower())
    if start is None or end is None or start not in _QUARTER_BY_START_MONTH:
        raise ValueError(text)
    quarter = _QUARTER_BY_START_MONTH[start]
    if _QUARTER_BY_END_MONTH.get(end) != quarter:
        raise ValueError(text)
    year = int(end_year)
    if start_year is not None and int(start_year) != year:
        raise ValueError(text)
    return _Period(_financial_year(year - 1 if quarter == 4 else year), quarter)


@lru_cache(maxsize=64)  # every data row repeats the same Year and Period End
def _period_from_columns(year_text: str, period_end_text: str) -> _Period:
    """`2020-21` and `September` -> Q2 2020-21. Raises ValueError otherwise."""
    match = re.fullmatch(r"(\d{4})\s*[-/]\s*(\d{2})", year_text.strip())
    month = _MONTHS.get(period_end_text.strip().lower())
    if not match or month not in _QUARTER_BY_END_MONTH:
        raise ValueError(f"{year_text!r} / {period_end_text!r}")
    start = int(match.group(1))
    if int(match.group(2)) != (start + 1) % 100:
        raise ValueError(f"{year_text!r} is not a financial year")
    return _Period(_financial_year(start), _QUARTER_BY_END_MONTH[month])


def period_from_file_name(source_name: str) -> _Period | None:
    """The period a file name states, None when it states none. See the module docstring."""
    name = re.split(r"[\\/]", source_name)[-1]
    fy_then_q = re.search(r"(?<!\d)(20\d\d)[-_/ ](\d\d)(?!\d)[-_ ]*Q([1-4])(?!\d)", name, re.IGNORECASE)
    q_then_fy = re.search(r"(?<![A-Za-z])Q([1-4])[-_ ]*(20\d\d)[-_/ ](\d\d)(?!\d)", name, re.IGNORECASE)
    compact = re.search(r"(?<!\d)(\d\d)(\d\d)[-_ ]*Q([1-4])(?!\d)", name, re.IGNORECASE)
    if q_then_fy:
        quarter, start, end = int(q_then_fy.group(1)), int(q_then_fy.group(2)), int(q_then_fy.group(3))
    elif fy_then_q:
        start, end, quarter = int(fy_then_q.group(1)), int(fy_then_q.group(2)), int(fy_then_q.group(3))
    elif compact:
        first, second, quarter = int(compact.group(1)), int(compact.group(2)), int(compact.group(3))
        if second != (first + 1) % 100:
            raise Kh03Rejected(
                "unclear_file_name_period",
                f"{source_name}: the file name's {compact.group(0)!r} is not a financial year written as two "
                "consecutive years (like 2021 for 2020-21); it could be calendar or financial, so it is not guessed",
            )
        start, end = 2000 + first, second
    elif re.search(r"(?<![A-Za-z])Q[1-4](?!\d)", name, re.IGNORECASE):
        raise Kh03Rejected(
            "unclear_file_name_period",
            f"{source_name}: the file name carries a quarter but no financial year that can be read with it",
        )
    else:
        return None
    if end != (start + 1) % 100:
        raise Kh03Rejected(
            "unclear_file_name_period", f"{source_name}: {start}-{end:02d} in the file name is not a financial year"
        )
    return _Period(_financial_year(start), quarter)


def _quarter_dates(period: _Period) -> tuple[date, date]:
    start_year = int(period.financial_year[:4])
    return {
        1: (date(start_year, 4, 1), date(start_year, 6, 30)),
        2: (date(start_year, 7, 1), date(start_year, 9, 30)),
        3: (date(start_year, 10, 1), date(start_year, 12, 31)),
        4: (date(start_year + 1, 1, 1), date(start_year + 1, 3, 31)),
    }[period.quarter]


# ------------------------------------------------------------------------------------------------ sheets


Values = tuple[float | None, ...]  # a row's counts, one per key of its sheet's `columns`, in that order


@dataclass
class _Sheet:
    name: str
    kind: str  # TRUST_SHEET, REGION_SHEET or SPECIALTY_SHEET
    title: dict[str, str]  # "period", "published", "revised" -> text
    periods: list[tuple[str, _Period]]  # (where it was read, period)
    columns: dict[tuple[str, str], int]  # (group, sector or specialty) -> column; its order is that of Values
    england: Values | None = None
    england_row: int | None = None
    rows: dict[str, tuple[int, str, str, Values]] = field(default_factory=dict)  # code -> (row, name, region, values)
    replaced: list[str] = field(default_factory=list)
    all_floats: bool = True  # every count and % Occupied read is a float (no '-', no text, no empty cell)

    @property
    def slots(self) -> dict[tuple[str, str], int]:
        """Where each key's value is in Values. Rows are tuples, not dicts keyed by (group, sector): a 100,000-trust
        sheet hashed those keys 1.5 million times to build its rows and as many again to check and hand them out."""
        return {key: slot for slot, key in enumerate(self.columns)}


def _find_header(rows: list[list[object]], source: str, sheet: str) -> int:
    for index, row in enumerate(rows[:60]):
        texts = {_norm(value) for value in row}
        if "year" in texts and "period end" in texts:
            return index
    raise Kh03Rejected(
        "missing_header", f"{source}, sheet {sheet!r}: no header row holding 'Year' and 'Period End' in the top 60 rows"
    )


def _title_block(rows: list[list[object]], header: int) -> dict[str, str]:
    found: dict[str, str] = {}
    for row in rows[:header]:
        for position, value in enumerate(row):
            label = _norm(value)
            key = label[:-1].strip() if label.endswith(":") else None
            if key in {"period", "published", "revised"} and key not in found:
                rest = [cell_text(other).strip() for other in row[position + 1:]]
                found[key] = next((text for text in rest if text), "")
    return found


class _KeyColumns(NamedTuple):
    year: int
    period_end: int
    region: int | None
    code: int
    name: int


def _key_columns(headers: list[str], kind: str, source: str, name: str, header: int) -> _KeyColumns:
    """The Year, Period End, region code, row code and name columns (the region code one may be missing; the
    header row holds Year and Period End, or _find_header would not have found it)."""
    def first(candidates: set[str]) -> int | None:
        return next((position for position, text in enumerate(headers) if text in candidates), None)

    year_col, end_col = first({"year"}), first({"period end"})
    region_col, org_col = first(_REGION_CODE_HEADERS), first(_ORG_CODE_HEADERS)
    name_cols = [position for position, text in enumerate(headers) if text.endswith("name")]
    if kind == REGION_SHEET:
        code_col = region_col
        name_col = next((position for position in name_cols if region_col is None or position > region_col), None)
        missing = "a region code column (Region Code, SHA Code or AT Code)" if code_col is None else None
    else:
        code_col = org_col
        name_col = next((position for position in name_cols if org_col is None or position > org_col), None)
        missing = "an 'Org Code' column" if code_col is None else None
    if missing is None and name_col is None:
        missing = "a name column (Org Name, AT Name, Region Name ...)"
    if missing:
        raise Kh03Rejected("missing_header", f"{_where(source, name, header + 1)}: the header row has no {missing}")
    assert year_col is not None and end_col is not None and code_col is not None and name_col is not None
    return _KeyColumns(year_col, end_col, region_col, code_col, name_col)


def _count_columns(rows: list[list[object]], header: int, headers: list[str], raw_headers: list[str], kind: str,
                   source: str, name: str) -> dict[tuple[str, str], int]:
    """Where each count is on the sheet: (group, sector) -> column, from the header row and the group labels
    above it; a specialty sheet's ("occupied", "<code>|<name>") from its headers like '100 General Surgery'."""
    columns: dict[tuple[str, str], int] = {}
    if kind == SPECIALTY_SHEET:
        for position, text in enumerate(raw_headers):
            match = re.fullmatch(r"(\d{3})\s+(.+)", text)
            if match:
                columns[("occupied", f"{match.group(1)}|{' '.join(match.group(2).split())}")] = position
        if not columns:
            raise Kh03Rejected(
                "missing_header", f"{_where(source, name, header + 1)}: no specialty columns like '100 General Surgery'"
            )
    else:
        group_row = next(
            (
                index
                for index in range(header - 1, max(header - 4, -1), -1)
                if any(_norm(value) in _GROUP_BY_LABEL for value in rows[index])
            ),
            None,
        )
        if group_row is None:
            raise Kh03Rejected(
                "missing_header",
                f"{_where(source, name, header)}: no group labels 'Available', 'Occupied', '% Occupied' above the header",
            )
        group: str | None = None
        for position, text in enumerate(headers):
            label = _norm(_cell(rows[group_row], position))
            if label in _GROUP_BY_LABEL:
                group = _GROUP_BY_LABEL[label]
            sector = _SECTOR_BY_HEADER.get(text)
            if sector is None or group is None:
                continue
            if (group, sector) in columns:
                raise Kh03Rejected(
                    "missing_header",
                    f"{_where(source, name, header + 1, position, raw_headers[position])}: "
                    f"a second {sector!r} column in the {group} group",
                )
            columns[(group, sector)] = position
        lacking = [f"{group} / {sector}" for group in _GROUP_BY_LABEL.values() for sector in SECTORS
                   if (group, sector) not in columns]
        if lacking:
            raise Kh03Rejected(
                "missing_header", f"{_where(source, name, header + 1)}: the header band lacks {', '.join(lacking)}"
            )
    return columns


def _title_periods(title: dict[str, str], source: str, name: str) -> list[tuple[str, _Period]]:
    """The quarter the title block's 'Period:' states, if it has one."""
    if not title.get("period"):
        return []
    try:
        return [(f"sheet {name!r} title 'Period:'", _period_from_title(title["period"]))]
    except ValueError as exc:
        raise Kh03Rejected(
            "unreadable_period",
            f"{source}, sheet {name!r}: the title block's Period: {title['period']!r} is not one quarter",
        ) from exc


def _read_sheet(workbook: Workbook, name: str, kind: str, source: str) -> _Sheet:
    rows = sheet_rows(workbook, name, source, rejected=Kh03Rejected)
    header = _find_header(rows, source, name)
    headers = [_norm(value) for value in rows[header]]
    raw_headers = [cell_text(value).strip() for value in rows[header]]

    key_columns = _key_columns(headers, kind, source, name, header)
    columns = _count_columns(rows, header, headers, raw_headers, kind, source, name)
    title = _title_block(rows, header)
    sheet = _Sheet(name, kind, title, _title_periods(title, source, name), columns)
    _read_rows(sheet, rows, header + 1, key_columns, source, raw_headers)
    if not sheet.rows:
        raise Kh03Rejected("no_rows", f"{source}, sheet {name!r}: a header but no data rows")
    if sheet.england is None:
        raise Kh03Rejected("missing_england_row", f"{source}, sheet {name!r}: no England row")
    return sheet


def _read_rows(sheet: _Sheet, rows: list[list[object]], first: int, key_columns: _KeyColumns, source: str,
               raw_headers: list[str]) -> None:
    """Every row from `first` on into sheet.rows (or sheet.england). This loop runs once per row of a
    100,000-trust sheet, so a row's cells are taken in two C-level steps (itemgetter) and its key cells read
    inline; the rare cases (a cell that is not a float, a new Year / Period End) go to functions of their own."""
    name, kept, replaced = sheet.name, sheet.rows, sheet.replaced
    column_items = list(sheet.columns.items())
    positions = [position for _, position in column_items]
    region_col = key_columns.region if sheet.kind != REGION_SHEET else None
    keys = itemgetter(key_columns.code, key_columns.name, key_columns.year, key_columns.period_end,
                      key_columns.code if region_col is None else region_col)
    counts = itemgetter(*positions) if len(positions) > 1 else (lambda row: (row[positions[0]],))
    width = max(*positions, *(column for column in key_columns if column is not None)) + 1
    last_year = last_end = None
    seen: set[_Period] = set()  # the periods the Year / Period End columns gave so far
    for index in range(first, len(rows)):
        row = rows[index]
        if len(row) < width:
            row = [*row, *repeat(None, width - len(row))]  # cells past a short row's end are empty
        cells = counts(row)
        try:
            # Nearly every row: every count a float cell. float.__float__ refuses anything else (None, text, int)
            # in C, so such a row takes the cell-by-cell path below.
            values: Values = tuple(map(_FLOAT_ONLY, cells))
            complete = True
        except TypeError:
            values, complete = _cell_values(cells, column_items, source, name, index + 1, raw_headers), False
        code, label, year, end, region = keys(row)
        code = code.strip() if code.__class__ is str else cell_text(code).strip()
        label = label.strip() if label.__class__ is str else cell_text(label).strip()
        if not complete:
            if not code and values.count(None) == len(values):
                continue  # a blank spacer row or a footnote
            sheet.all_floats = False
        if year != last_year or end != last_end:  # every data row repeats them: read once per change
            year = year if year.__class__ is str else cell_text(year)
            end = end if end.__class__ is str else cell_text(end)
            if year.strip() or end.strip():
                last_year, last_end = year, end
                _column_period(sheet, seen, year, end, source, index + 1)
        if not complete:
            _counts_present(sheet, values, source, index + 1, raw_headers)
        if label.lower() == "england":  # codes are blank on it today; an E92000001 would not make it a region
            if sheet.england is not None:
                raise Kh03Rejected("duplicate_england_row", f"{_where(source, name, index + 1)}: a second England row")
            sheet.england, sheet.england_row = values, index + 1
            continue
        if not code:
            code_col = key_columns.code
            raise Kh03Rejected(
                "missing_org_code", f"{_where(source, name, index + 1, code_col, raw_headers[code_col])}: no code"
            )
        if region_col is None:
            region = ""
        elif region.__class__ is str:
            region = region.strip()
        else:
            region = cell_text(region).strip()
        if code in kept:
            replaced.append(f"{name}: {code}")
        kept[code] = (index + 1, label, region, values)  # a re-submitted row later on the sheet wins


def _column_period(sheet: _Sheet, seen: set[_Period], year_text: str, end_text: str, source: str,
                   excel_row: int) -> None:
    """A row's Year and Period End as a period, noted in sheet.periods the first time it is seen."""
    try:
        period = _period_from_columns(year_text, end_text)
    except ValueError as exc:
        raise Kh03Rejected(
            "unreadable_period",
            f"{_where(source, sheet.name, excel_row)}: Year {year_text!r} / Period End {end_text!r} "
            "is not a financial year and a quarter-end month",
        ) from exc
    if period not in seen:
        seen.add(period)
        sheet.periods.append((f"sheet {sheet.name!r} row {excel_row} Year/Period End", period))


def _counts_present(sheet: _Sheet, values: Values, source: str, excel_row: int, raw_headers: list[str]) -> None:
    """Refuse a row with an empty bed count (an empty % Occupied is allowed: no beds)."""
    for key, value in zip(sheet.columns, values, strict=True):
        if value is None and key[0] != "pct_occupied":
            position = sheet.columns[key]
            raise Kh03Rejected(
                "bad_value",
                f"{_where(source, sheet.name, excel_row, position, raw_headers[position])}: empty bed count",
            )


_FLOAT_ONLY = float.__float__  # the float itself; TypeError for any other type


def _cell_values(cells: Sequence[object], column_items: list[tuple[tuple[str, str], int]], source: str, name: str,
                 excel_row: int, raw_headers: list[str]) -> Values:
    """A row with something other than a float among its counts: each cell checked on its own."""
    values: list[float | None] = []
    for (key, position), value in zip(column_items, cells, strict=True):
        if value.__class__ is float:
            values.append(value)  # type: ignore[arg-type]
            continue
        if key[0] == "pct_occupied" and isinstance(value, str) and value.strip() == "-":
            values.append(None)  # "-" is what KH03 prints where no beds were available
            continue
        try:
            values.append(_number(value))
        except ValueError as exc:
            raise Kh03Rejected(
                "bad_value",
                f"{_where(source, name, excel_row, position, raw_headers[position])}: {cell_text(value)!r} is not a number",
            ) from exc
    return tuple(values)


def _columns_agree(columns: Sequence[Sequence[float]], slots: dict[tuple[str, str], int]) -> bool:
    """True when every Total is the sum of its sectors and every % Occupied agrees with occupied / available in
    all rows (`columns`: one sequence per key, every value a float), judged column by column in C (map, compress,
    any) with the same float arithmetic, in the same order, as the row-by-row check in _check_rows. False when
    anything might not agree: that loop then decides, and names the first row that does not."""
    total_tolerance, pct_tolerance = repeat(float(TOTAL_TOLERANCE)), repeat(float(PCT_TOLERANCE))
    for group in ("available", "occupied"):
        total, first, second, third, fourth = (columns[slots[(group, sector)]] for sector in SECTORS)
        parts = map(add, map(add, map(add, first, second), third), fourth)
        if any(map(gt, map(abs, map(sub, total, parts)), total_tolerance)):
            return False
    for sector in SECTORS:
        available, occupied, published = (columns[slots[(group, sector)]] for group in _GROUPS)
        with_beds = list(map(gt, available, repeat(0.0)))
        expected = map(truediv, compress(occupied, with_beds), compress(available, with_beds))
        if any(map(gt, map(abs, map(sub, compress(published, with_beds), expected)), pct_tolerance)):
            return False
    return True


_GROUPS = ("available", "occupied", "pct_occupied")


def _check_sheet(sheet: _Sheet, source: str) -> None:
    assert sheet.england is not None and sheet.england_row is not None
    row_values = [values for _, _, _, values in sheet.rows.values()]
    columns = list(zip(sheet.england, *row_values, strict=True))  # per key: England's value, then each row's
    if sheet.kind != SPECIALTY_SHEET and not (sheet.all_floats and _columns_agree(columns, sheet.slots)):
        _check_rows(sheet, source)
    headers = {position: f"{group} {sector}" for (group, sector), position in sheet.columns.items()}
    tolerance = float(ENGLAND_TOLERANCE_PER_ROW) * len(row_values)
    for (key, position), column in zip(sheet.columns.items(), columns, strict=True):
        if key[0] == "pct_occupied":
            continue
        england = column[0]
        summed = math.fsum(islice(column, 1, None))  # counts: never None here (empty ones are refused)
        if england is not None and abs(england - summed) > tolerance:
            raise Kh03Rejected(
                "england_mismatch",
                f"{_where(source, sheet.name, sheet.england_row, position, headers[position])}: England {england!r} "
                f"is not the sum of the {len(row_values)} rows below it, {summed:.6f} (tolerance {tolerance:g})",
            )


def _check_rows(sheet: _Sheet, source: str) -> None:
    """Every Total against its four sectors and every % Occupied against occupied / available, row by row from
    the England row down: the authority, which names the first row and column that do not agree."""
    assert sheet.england is not None and sheet.england_row is not None
    headers = {position: f"{group} {sector}" for (group, sector), position in sheet.columns.items()}
    total_tolerance, pct_tolerance = float(TOTAL_TOLERANCE), float(PCT_TOLERANCE)
    slots = sheet.slots
    # Slots looked up once: these loops run for every row of a 100,000-trust sheet.
    totals = [(group, slots[(group, "Total")], *(slots[(group, sector)] for sector in SECTORS[1:]))
              for group in ("available", "occupied")]
    ratios = [(sector, *(slots[(group, sector)] for group in _GROUPS)) for sector in SECTORS]
    all_rows = [(excel_row, values) for excel_row, _, _, values in sheet.rows.values()]
    for excel_row, values in [(sheet.england_row, sheet.england), *all_rows]:
        for group, total_at, at_1, at_2, at_3, at_4 in totals:
            total = values[total_at]
            parts = (values[at_1] or 0.0) + (values[at_2] or 0.0) + (values[at_3] or 0.0) + (values[at_4] or 0.0)
            if total is not None and abs(total - parts) > total_tolerance:
                position = sheet.columns[(group, "Total")]
                raise Kh03Rejected(
                    "total_mismatch",
                    f"{_where(source, sheet.name, excel_row, position, headers[position])}: Total {total!r} is not "
                    f"the sum of its four sectors {parts:.6f} (tolerance {TOTAL_TOLERANCE})",
                )
        for sector, available_at, occupied_at, pct_at in ratios:
            available, occupied, pct = values[available_at], values[occupied_at], values[pct_at]
            if available is None or occupied is None or available <= 0:
                continue
            position = sheet.columns[("pct_occupied", sector)]
            expected = occupied / available
            if pct is None or abs(pct - expected) > pct_tolerance:
                raise Kh03Rejected(
                    "pct_occupied_mismatch",
                    f"{_where(source, sheet.name, excel_row, position, headers[position])}: % Occupied "
                    f"{'-' if pct is None else repr(pct)} but occupied / available = {expected:.4f} "
                    f"(tolerance {PCT_TOLERANCE})",
                )


def _sector_slots(sheet: _Sheet) -> list[tuple[str, int, int, int]]:
    """(sector, slot of available, of occupied, of % Occupied) per sector, for a trust or region sheet's Values."""
    slots = sheet.slots
    return [(sector, *(slots[(group, sector)] for group in _GROUPS)) for sector in SECTORS]  # type: ignore[misc]


# ------------------------------------------------------------------------------------------------- entry


@contextmanager
def _without_cycle_collection():
    """Python's cycle collector paused while a workbook becomes rows. A large sheet makes hundreds of thousands
    of tuples and dicts, none of them in a cycle, and the collector would walk them again and again as they
    pile up: about a quarter of the read time on a 100,000-trust sheet (./start.sh bench excel). Reference
    counting still frees everything; the collector resumes (if it was on) when the read ends, however it ends."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def read_kh03(data: bytes, source_name: str, *, engine: str = "calamine",
              limits: WorkbookLimits = DEFAULT_LIMITS, copy_to_disk: bool = False) -> Kh03Workbook:
    """Parse one KH03 overnight workbook (.xlsx or .xls). `engine="openpyxl"` reads an .xlsx with openpyxl
    (the fallback, used by default only when calamine cannot open the file). Nothing is read before the
    workbook's cost is found within `limits` (elt/readers/workbook_guard.py). `copy_to_disk`: see
    elt.readers.spreadsheet.open_workbook (the loader passes it for a contract without personal data).

    Raises Kh03Rejected naming the file, sheet, row and column: workbook_too_large, sheet_too_large, zip_bomb,
    unsupported_workbook, workbook_too_slow, unreadable_workbook, no_kh03_sheet,
    missing_header, bad_value, missing_org_code, missing_england_row, duplicate_england_row, no_rows,
    missing_period, unreadable_period, period_mismatch, unclear_file_name_period,
    file_name_period_mismatch, total_mismatch, england_mismatch, pct_occupied_mismatch.
    """
    with _without_cycle_collection():
        return _read_kh03(data, source_name, engine, limits, copy_to_disk)


def _read_kh03(data: bytes, source_name: str, engine: str, limits: WorkbookLimits, copy_to_disk: bool) -> Kh03Workbook:
    workbook = open_workbook(data, source_name, engine=engine, rejected=Kh03Rejected, limits=limits,
                             copy_to_disk=copy_to_disk)
    wanted = {" ".join(kind.split()).lower(): kind for kind in KH03_SHEETS}
    found: list[tuple[str, str]] = []  # (sheet name as in the workbook, kind)
    for name in workbook.sheet_names:
        kind = wanted.get(" ".join(name.split()).lower())
        if kind and kind not in {known for _, known in found}:
            found.append((name, kind))
    if not found:
        raise Kh03Rejected(
            "no_kh03_sheet",
            f"{source_name} has none of the sheets {', '.join(KH03_SHEETS)}; its sheets: "
            f"{', '.join(workbook.sheet_names) or '(none)'}",
        )
    sheets = {kind: _read_sheet(workbook, name, kind, source_name) for name, kind in found}

    periods = [item for sheet in sheets.values() for item in sheet.periods]
    if not periods:
        raise Kh03Rejected(
            "missing_period",
            f"{source_name}: no title-block 'Period:' and no Year / Period End values on any KH03 sheet",
        )
    period = periods[0][1]
    for where, other in periods[1:]:
        if other != period:
            raise Kh03Rejected(
                "period_mismatch", f"{source_name}: {periods[0][0]} says {period} but {where} says {other}"
            )
    named = period_from_file_name(source_name)
    if named is not None and named != period:
        raise Kh03Rejected(
            "file_name_period_mismatch",
            f"{source_name}: the file name says {named} but the workbook ({periods[0][0]}) says {period}",
        )

    for sheet in sheets.values():
        _check_sheet(sheet, source_name)

    trust_rows: list[Kh03TrustRow] = []
    region_rows: list[Kh03RegionRow] = []
    specialty_rows: list[Kh03SpecialtyRow] = []
    # tuple.__new__ and slots looked up once: half a million rows from a 100,000-trust sheet.
    new = tuple.__new__
    if TRUST_SHEET in sheets:
        slots = _sector_slots(sheets[TRUST_SHEET])
        trust_rows = [
            new(Kh03TrustRow, (code, label, region, sector, values[available], values[occupied], values[pct], excel_row))
            for code, (excel_row, label, region, values) in sheets[TRUST_SHEET].rows.items()
            for sector, available, occupied, pct in slots
        ]
    if REGION_SHEET in sheets:
        slots = _sector_slots(sheets[REGION_SHEET])
        region_rows = [
            new(Kh03RegionRow, (code, label, sector, values[available], values[occupied], values[pct], excel_row))
            for code, (excel_row, label, _, values) in sheets[REGION_SHEET].rows.items()
            for sector, available, occupied, pct in slots
        ]
    if SPECIALTY_SHEET in sheets:
        for code, (excel_row, label, region, values) in sheets[SPECIALTY_SHEET].rows.items():
            for (_, specialty), value in zip(sheets[SPECIALTY_SHEET].columns, values, strict=True):
                specialty_code, specialty_name = specialty.split("|", 1)
                specialty_rows.append(Kh03SpecialtyRow(
                    code, label, region, specialty_code, specialty_name, value, excel_row,  # type: ignore[arg-type]
                ))
    england_source = sheets.get(TRUST_SHEET) or sheets.get(REGION_SHEET)
    england_row: tuple[Kh03EnglandRow, ...] = ()
    if england_source is not None and england_source.england is not None:
        values = england_source.england
        england_row = tuple(
            Kh03EnglandRow(sector, values[available], values[occupied], values[pct])  # type: ignore[arg-type]
            for sector, available, occupied, pct in _sector_slots(england_source)
        )

    title = next((sheet.title for sheet in sheets.values() if sheet.title.get("published")), {})
    start, end = _quarter_dates(period)
    return Kh03Workbook(
        financial_year=period.financial_year,
        quarter=period.quarter,
        period_start=start,
        period_end=end,
        published=_parse_date_text(title.get("published", "")),
        trust_rows=tuple(trust_rows),
        region_rows=tuple(region_rows),
        specialty_rows=tuple(specialty_rows),
        england_row=england_row,
        revised=_parse_date_text(title.get("revised", "")),
        sheets=tuple(name for name, _ in found),
        replaced_codes=tuple(code for sheet in sheets.values() for code in sheet.replaced),
    )
