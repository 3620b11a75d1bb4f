"""The `kh03` reader: an NHS England KH03 workbook (elt/readers/kh03.py parses and checks it) as the raw tables the
loader fills, one per data sheet, with the quarter the workbook states.

Kept apart from the parser so that the registry, which `load_contracts` consults wherever contracts are read (the
DAG files' parse included), does not import the workbook engines: they are imported when a workbook is read.
The tables' names and columns are declared here once: `to_csv_tables` writes them, and `accepts` holds the
contract's `target_table` and `extra_tables` to them.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
from datetime import date
from typing import TYPE_CHECKING

from elt.readers.base import Period, ReadFile, Source, Table
from elt.readers.table import workbook_bytes

if TYPE_CHECKING:
    from elt.contracts import Contract
    from elt.readers.kh03 import Kh03Workbook
    from elt.readers.workbook_guard import WorkbookLimits

log = logging.getLogger(__name__)

# The raw tables one workbook fills (contract nhs_kh03_overnight: target_table, then extra_tables by name),
# and their columns in order. Counts are written as the stored double's shortest repr: the published decimal.
TRUST_SECTOR_COLUMNS = ("financial_year", "quarter", "period_start", "period_end", "org_code", "org_name",
                        "region_code", "sector", "available", "occupied", "pct_occupied", "is_england", "sheet_row")
REGION_SECTOR_COLUMNS = ("financial_year", "quarter", "period_start", "period_end", "region_code", "region_name",
                         "sector", "available", "occupied", "pct_occupied", "is_england", "sheet_row")
SPECIALTY_COLUMNS = ("financial_year", "quarter", "period_start", "period_end", "org_code", "org_name",
                     "region_code", "specialty_code", "specialty_name", "occupied", "sheet_row")
TABLE_COLUMNS = {"trust_sector": TRUST_SECTOR_COLUMNS, "region_sector": REGION_SECTOR_COLUMNS,
                 "specialty": SPECIALTY_COLUMNS}
MAIN_TABLE = "trust_sector"  # the contract's target_table; its extra_tables are the others, by name


def _count(value: float | None) -> str:
    return "" if value is None else repr(value)


def _csv(header: tuple[str, ...], rows: list[tuple]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().encode("utf-8")


def to_csv_tables(book: Kh03Workbook) -> dict[str, bytes]:
    """The workbook as CSV per raw table: `trust_sector`, `region_sector`, `specialty` (a table whose sheet the
    workbook lacks is absent). The England row goes with the sheet it was read from: the trust sheet when
    there is one, else the region sheet."""
    period = (book.financial_year, str(book.quarter), book.period_start.isoformat(), book.period_end.isoformat())
    england = [(*period, "", "England", "", row.sector, _count(row.available_value), _count(row.occupied_value),
                _count(row.pct_occupied_value), "true", "") for row in book.england_row]
    tables: dict[str, bytes] = {}
    if book.trust_rows:
        rows = [(*period, row.org_code, row.org_name, row.region_code, row.sector, _count(row.available_value),
                 _count(row.occupied_value), _count(row.pct_occupied_value), "false", row.sheet_row)
                for row in book.trust_rows]
        tables["trust_sector"] = _csv(TRUST_SECTOR_COLUMNS, england + rows)
    if book.region_rows:
        rows = [(*period, row.region_code, row.region_name, row.sector, _count(row.available_value),
                 _count(row.occupied_value), _count(row.pct_occupied_value), "false", row.sheet_row)
                for row in book.region_rows]
        # England here only without a trust sheet (it is one row of the workbook, stored once).
        region_england = [] if book.trust_rows else [(*e[:4], "", "England", *e[7:]) for e in england]
        tables["region_sector"] = _csv(REGION_SECTOR_COLUMNS, region_england + rows)
    if book.specialty_rows:
        rows = [(*period, row.org_code, row.org_name, row.region_code, row.specialty_code, row.specialty_name,
                 _count(row.occupied_value), row.sheet_row) for row in book.specialty_rows]
        tables["specialty"] = _csv(SPECIALTY_COLUMNS, rows)
    return tables


def _period(book: Kh03Workbook) -> Period:
    """The quarter the workbook states, published on its Revised: date, else its Published: date, when it says."""
    published = book.revised if isinstance(book.revised, date) else book.published
    return Period(book.period_start, book.period_end, f"{book.financial_year} Q{book.quarter}", source="content",
                  published_on=published if isinstance(published, date) else None)


class Kh03Reader:
    """Finds every sheet and header of a KH03 workbook by its contents, establishes the quarter from the workbook
    (cross-checked with its name when the name has one), checks it whole (totals, England row, % occupied) and
    fills the contract's target_table and each of its extra_tables; .xlsx and .xls alike."""

    name = "kh03"
    extensions = ("xlsx", "xls")
    states_period = True
    noun = "workbook"

    def accepts(self, contract: Contract) -> str | None:
        parts = [MAIN_TABLE, *(extra.name for extra in contract.extra_tables)]
        if len(set(parts)) != len(parts) or not set(parts) <= set(TABLE_COLUMNS):
            return (f"the kh03 reader fills target_table ({MAIN_TABLE}) and extra_tables named "
                    f"{', '.join(t for t in TABLE_COLUMNS if t != MAIN_TABLE)}, each once")
        for part, table in zip(parts, contract.table_contracts(), strict=True):
            if set(table.column_names) != set(TABLE_COLUMNS[part]):
                return f"the kh03 reader's {part} table has the columns {', '.join(TABLE_COLUMNS[part])}"
        return None

    def period(self, contract: Contract, path: str, *, within: str = "key") -> Period | None:
        return None  # the workbook states it; a period in its name is checked against the workbook's as it is read

    def tables(self, contract: Contract, source: Source, *, limits: WorkbookLimits) -> ReadFile:
        from elt.readers.kh03 import Kh03Rejected, read_kh03

        data = workbook_bytes(source, limits)
        book = read_kh03(data, source.name, limits=limits, copy_to_disk=not contract.personal_data)
        csv_tables = to_csv_tables(book)
        parts = [MAIN_TABLE, *(extra.name for extra in contract.extra_tables)]
        tables = [Table(table, lambda data=csv_tables[part]: iter([data]), part)
                  for part, table in zip(parts, contract.table_contracts(), strict=True) if part in csv_tables]
        if not tables:
            raise Kh03Rejected("no_rows", f"{source.name} has rows on none of the sheets {contract.drop_type} loads")
        log.info("%s: KH03 %s Q%d (%s to %s), sheets %s, tables %s", source.name, book.financial_year, book.quarter,
                 book.period_start, book.period_end, ", ".join(book.sheets), ", ".join(t.name for t in tables))
        return ReadFile(tables, _period(book), sha256=hashlib.sha256(data).hexdigest(),
                        encoding=contract.format.upper())

    def checks(self, contract: Contract, data: bytes, *, name: str, limits: WorkbookLimits) -> Period | None:
        """Every KH03 check: the workbook loads whole or not at all."""
        from elt.readers.kh03 import read_kh03

        return _period(read_kh03(data, name, limits=limits))  # Kh03Rejected is a FileRejected
