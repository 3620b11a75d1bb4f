"""The `table` reader: one raw table per file, a CSV as it lands or a workbook's sheet found by its header.

Most drop types use it (every Medilink file, claims batches, workbook contracts). Its reporting period is the one
the key names (`period.key_date_pattern`: a day or a calendar month); without one the loader takes the day the
file lands. The workbook engines are imported when a workbook is read, not when the registry is, since
`load_contracts` consults the registry wherever contracts are read (the DAG files' parse included).
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from elt.readers.base import Period, ReadFile, Source, Table
from elt.readers.csv_header import (
    FileRejected,
    blank,
    check_line_ends,
    check_text,
    map_header,
    read_header,
    split_bom,
)

if TYPE_CHECKING:
    from elt.contracts import Contract
    from elt.readers.workbook_guard import WorkbookLimits


def key_period(contract: Contract, path: str, *, within: str = "key") -> Period | None:
    """The day or calendar month `period.key_date_pattern` finds in `path` (a key below the landing prefix, or a
    local file's path: `within` says which), labelled as people write it: '2026-11-14', '2024-01'."""
    try:
        named = contract.period_in_key(path)
    except ValueError as exc:
        raise FileRejected("bad_period", f"{exc} (in the {within})") from None
    if named is None:
        return None
    start, end = named
    label = start.isoformat() if start == end else start.strftime("%Y-%m") if start.day == 1 else f"{start} to {end}"
    return Period(start, end, label, source="key")


def workbook_bytes(source: Source, limits: WorkbookLimits) -> bytes:
    """The workbook's bytes, once its size is within `limits`: a zip cannot be streamed, so it is read whole, and
    one too large is refused before it is fetched."""
    from elt.readers.workbook_guard import over

    if source.size > limits.max_file_bytes:
        raise over("workbook_too_large", f"{source.name} is {source.size:,} bytes", "max_file_bytes", limits,
                   "split the workbook, or raise the limit if the file is trusted")
    return source.read()


class _OneTable:
    name = "table"
    states_period = False

    def accepts(self, contract: Contract) -> str | None:
        if contract.extra_tables:
            return "extra_tables need a reader that fills several tables (kh03)"
        return None

    def period(self, contract: Contract, path: str, *, within: str = "key") -> Period | None:
        return key_period(contract, path, within=within)


class CsvReader(_OneTable):
    """A CSV file, streamed to the loader as it landed: the loader maps its header, decodes it (UTF-8, else
    Windows-1252) and hashes it as it copies."""

    extensions = ("csv",)
    noun = "file"

    def tables(self, contract: Contract, source: Source, *, limits: WorkbookLimits) -> ReadFile:
        return ReadFile([Table(contract, source.stream)])

    def checks(self, contract: Contract, data: bytes, *, name: str, limits: WorkbookLimits) -> Period | None:
        """Not empty, a header that maps to a layout, text in one of the encodings the loader reads (not a mix),
        one kind of line end (as COPY requires), and rows."""
        if blank(data):
            raise FileRejected("empty_file", "the file is empty")
        _, header = read_header(iter([data]))  # looks at no more than MAX_HEADER_BYTES
        map_header(contract, header)
        codec = check_text(data)
        check_line_ends(split_bom(data)[0].decode(codec))
        if blank(data[len(header):]):
            raise FileRejected("no_rows", "the file has a header but no data rows")
        return None


class WorkbookReader(_OneTable):
    """An .xlsx or .xls workbook whose sheet (the contract's, else the first) holds one table under title blocks:
    the sheet becomes the CSV the loader copies, and the file's sha256 is the workbook's own, so the same
    workbook landing again is still a duplicate."""

    extensions = ("xlsx", "xls")
    noun = "workbook"

    def tables(self, contract: Contract, source: Source, *, limits: WorkbookLimits) -> ReadFile:
        from elt.readers.spreadsheet import spreadsheet_to_csv

        data = workbook_bytes(source, limits)
        table = spreadsheet_to_csv(contract, data, source_name=source.name, limits=limits)
        return ReadFile([Table(contract, lambda: iter([table]))], sha256=hashlib.sha256(data).hexdigest(),
                        encoding=contract.format.upper())

    def checks(self, contract: Contract, data: bytes, *, name: str, limits: WorkbookLimits) -> Period | None:
        from elt.readers.spreadsheet import spreadsheet_to_csv

        spreadsheet_to_csv(contract, data, source_name=name, limits=limits)
        return None
