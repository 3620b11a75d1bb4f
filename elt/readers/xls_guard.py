"""What an untrusted .xls (Excel 97-2003) workbook may cost, checked before python-calamine opens it.

An .xls is an OLE2 compound file (CFB: a FAT of sector chains, a directory of streams) holding the BIFF
record stream `Workbook` (`Book` in older files). python-calamine reads every sheet of it as soon as the
workbook is opened, and believes the numbers it finds on the way: a header's FAT or DIFAT length, a
stream's size, a sector number far past the end of the file, a sector chain that loops, an SST declaring
two billion strings, a DIMENSIONS record declaring 4 billion rows, a cell at row 65,535 and column 65,535.
Each of these makes it reserve gigabytes, and a failed allocation aborts the process.

So this module reads the file the way calamine will (same fields, same chains, same record walk) with every
number checked against the file's real size and `WorkbookLimits` first: the sectors calamine would visit
must exist and be visited once, every capacity calamine derives from a field must fit in the file (or in
`max_inflated_bytes`), and each sheet's declared and real extent and cell count must be within the row,
column and cell limits. It refuses (FileRejected) whatever fails; the cost of this walk is one pass over the
file and the records of its sheets. Pure: bytes in, nothing out.
"""

from __future__ import annotations

import struct

from elt.readers.csv_header import FileRejected
from elt.readers.workbook_guard import WorkbookLimits, column_letters, over

ENDOFCHAIN = 0xFFFFFFFE
RESERVED = 0xFFFFFFFA  # sector numbers from here on are markers, never sectors
DIFSECT = 0xFFFFFFFC
EOF_RECORD, CONTINUE, SST, BOUNDSHEET, DIMENSIONS = 0x000A, 0x003C, 0x00FC, 0x0085, 0x0200
MULRK = 0x00BD
# Records calamine reads a cell from: row (u16) and column (u16) first. MULRK holds a run of columns.
CELL_RECORDS = frozenset({0x0006, 0x0203, 0x0204, 0x0205, 0x027E, 0x00FD, MULRK, 0x00BE, 0x0201, 0x00D6})
CELL_SIZE = 40  # bytes calamine's Vec<Cell<Data>> takes per cell it reserves


class _Refused(Exception):
    """Why the structure is unsafe to hand to calamine (the message names fields, never contents)."""


class _Cfb:
    """The compound file as calamine reads it (calamine/src/cfb.rs), each step bounded."""

    def __init__(self, data: bytes, limits: WorkbookLimits) -> None:
        if len(data) < 512:
            raise _Refused("it is shorter than an OLE2 header")
        self.data = data
        shift, mini_shift = struct.unpack_from("<HH", data, 30)
        if shift not in (9, 12) or mini_shift != 6:
            raise _Refused(f"its header declares sector shifts {shift} and {mini_shift}")
        self.size = 1 << shift
        self.start = 512 if shift == 9 else 4096  # sector 0 follows the header
        self.sectors = max(0, -(-(len(data) - self.start) // self.size))
        dir_len, fat_len, dir_start = struct.unpack_from("<III", data, 40)
        mini_fat_start, mini_fat_len, difat_start = struct.unpack_from("<III", data, 60)
        for name, count in (("FAT", fat_len), ("directory", dir_len), ("mini FAT", mini_fat_len)):
            if count > self.sectors:  # calamine reserves this many sectors' worth before reading them
                raise _Refused(f"its header declares a {name} of {count:,} sectors; the file has {self.sectors:,}")
        # calamine takes the DIFAT length from bytes 62..66 (part of two other fields) and reserves that many
        # u32s: harmless in real files (at most a few hundred kilobytes), so only bounded by the memory limit
        if struct.unpack_from("<I", data, 62)[0] * 4 > limits.max_inflated_bytes:
            raise _Refused("its header's mini FAT fields make the reader reserve more memory than allowed")
        self.fat = self._fat(difat_start)
        directory = self.chain(dir_start, dir_len * self.size, what="directory")
        if len(directory) < 128 or len(directory) % 128:
            raise _Refused("its directory is cut short")
        self.entries = [self._entry(directory[i:i + 128]) for i in range(0, len(directory), 128)]
        self.mini = b""
        self.mini_fat: list[int] = []
        if mini_fat_len > 0:
            self.mini = self.chain(self.entries[0][1], self.entries[0][2], what="mini stream")
            raw = self.chain(mini_fat_start, mini_fat_len * self.size, what="mini FAT")
            self.mini_fat = list(struct.unpack_from(f"<{len(raw) // 4}I", raw))

    def _sector(self, number: int, what: str) -> bytes:
        if number >= self.sectors:
            raise _Refused(f"its {what} points at sector {number:,}; the file has {self.sectors:,}")
        at = self.start + number * self.size
        return self.data[at:at + self.size]

    def _fat(self, difat_start: int) -> list[int]:
        difat = list(struct.unpack_from("<109I", self.data, 76))
        seen: set[int] = set()
        sector = difat_start
        while sector < RESERVED:
            if sector in seen:
                raise _Refused("its DIFAT chain loops")
            seen.add(sector)
            block = self._sector(sector, "DIFAT")
            difat.extend(struct.unpack_from(f"<{len(block) // 4}I", block))
            sector = difat.pop()
        fat: list[int] = []
        for sector in difat:
            if sector < DIFSECT:
                block = self._sector(sector, "FAT")
                fat.extend(struct.unpack_from(f"<{len(block) // 4}I", block))
        return fat

    def chain(self, sector: int, length: int, *, what: str, mini: bool = False) -> bytes:
        """The bytes of a sector chain, cut to `length` (when > 0), as calamine's get_chain gives them."""
        if length > len(self.data):
            raise _Refused(f"its {what} declares {length:,} bytes, more than the whole file")
        table = self.mini_fat if mini else self.fat
        out, seen = bytearray(), set()
        while sector != ENDOFCHAIN:
            if sector in seen or sector >= len(table):
                raise _Refused(f"its {what} chain {'loops' if sector in seen else 'leaves the allocation table'}")
            seen.add(sector)
            if mini:
                if (sector + 1) * 64 > len(self.mini):
                    raise _Refused(f"its {what} points past the mini stream")
                out += self.mini[sector * 64:(sector + 1) * 64]
            else:
                out += self._sector(sector, what)
            sector = table[sector]
        return bytes(out[:length]) if length > 0 else bytes(out)

    def _entry(self, raw: bytes) -> tuple[str, int, int]:
        name = raw[:64].decode("utf-16-le", "replace").split("\x00", 1)[0]
        start = struct.unpack_from("<I", raw, 116)[0]
        size = struct.unpack_from("<I" if self.size == 512 else "<Q", raw, 120)[0]
        return name, start, size

    def stream(self) -> bytes:
        """The `Workbook` stream (or `Book`), the first directory entry of that name, as calamine picks it."""
        for wanted in ("Workbook", "Book"):
            for name, start, size in self.entries:
                if name == wanted:
                    return self.chain(start, size, what=f"{wanted} stream", mini=size < 4096)
        raise _Refused("it has no Workbook stream (is it an Excel file?)")


def _records(stream: bytes, at: int):
    """(type, data, continuation bytes) of each record from `at`, as calamine's RecordIter walks them."""
    end = len(stream)
    while at + 4 <= end:
        kind, length = struct.unpack_from("<HH", stream, at)
        if at + 4 + length > end:
            return
        data_at, at = at + 4, at + 4 + length
        continued = 0
        while at + 4 < end and struct.unpack_from("<H", stream, at)[0] == CONTINUE:
            more = struct.unpack_from("<H", stream, at + 2)[0]
            if at + 4 + more > end:
                return
            continued += more
            at += 4 + more
        yield kind, data_at, length, continued


class _Sheet:
    def __init__(self) -> None:
        self.rows = self.columns = self.cells = 0
        self.reserve = 0


def _scan_sheet(stream: bytes, at: int, sheet: _Sheet, limits: WorkbookLimits, budget: list[int]) -> None:
    """One sheet substream from `at` to its EOF record, as calamine walks it: declared DIMENSIONS (calamine
    reserves rows x columns cells from them) and the row and column of every cell record."""
    for kind, data_at, length, _ in _records(stream, at):
        budget[0] -= 4 + length
        if budget[0] < 0:
            raise _Refused("its sheets point into the same records over and over")
        if kind == EOF_RECORD:
            return
        if kind == DIMENSIONS and length in (10, 14):
            first_row, last_row, first_col, last_col = struct.unpack_from(
                "<IIHH" if length == 14 else "<HHHH", stream, data_at)
            if last_row >= 1 and last_col >= 1:
                rows, cols = (last_row - first_row) & 0xFFFFFFFF, (last_col - first_col) & 0xFFFFFFFF
                sheet.reserve = max(sheet.reserve, rows * cols)
                sheet.rows, sheet.columns = max(sheet.rows, last_row), max(sheet.columns, last_col)
        elif kind in CELL_RECORDS and length >= 4:
            row, col = struct.unpack_from("<HH", stream, data_at)
            last = col
            if kind in (MULRK, 0x00BE) and length >= 6:
                last = struct.unpack_from("<H", stream, data_at + length - 2)[0]
                sheet.cells += max(1, (length - 6) // (6 if kind == MULRK else 2))
            else:
                sheet.cells += 1
            sheet.rows, sheet.columns = max(sheet.rows, row + 1), max(sheet.columns, col + 1, last + 1)
            if sheet.cells > limits.max_cells:
                return


def _check_globals(stream: bytes, limits: WorkbookLimits) -> list[int]:
    """The globals substream: the SST's declared string count, and where each sheet starts."""
    sheets: list[int] = []
    for kind, data_at, length, continued in _records(stream, 0):
        if kind == EOF_RECORD:
            break
        if kind == SST and length >= 8:
            declared = struct.unpack_from("<i", stream, data_at + 4)[0]
            if declared < 0 or declared > (length + continued) // 3 or declared * 24 > limits.max_inflated_bytes:
                raise _Refused(f"its shared string table declares {declared:,} strings in "
                               f"{length + continued:,} bytes")
        elif kind == BOUNDSHEET and length >= 4:
            sheets.append(struct.unpack_from("<I", stream, data_at)[0])
    return sheets


def check_xls(data: bytes, source_name: str, limits: WorkbookLimits) -> None:
    """Refuse (FileRejected) an .xls whose reading by python-calamine would not be bounded by `limits`.
    calamine holds every sheet at once, so the cells of all sheets together are held to `max_cells` too."""
    budget = [limits.max_inflated_bytes]  # bytes of records the sheet walks may visit, all sheets together
    try:
        stream = _Cfb(data, limits).stream()
        sheets = []
        for start in _check_globals(stream, limits):
            sheets.append(_Sheet())
            _scan_sheet(stream, start, sheets[-1], limits, budget)
    except (_Refused, struct.error) as exc:
        reason = str(exc) if isinstance(exc, _Refused) else "its structure is cut short"
        raise FileRejected("unreadable_workbook", f"{source_name} is not a readable xls workbook ({reason}): "
                                                  "open it in Excel and save it again (as .xlsx)") from exc
    for number, sheet in enumerate(sheets, start=1):
        _check_sheet(sheet, f"{source_name}: sheet {number}", limits)
    total = sum(max(sheet.rows * sheet.columns, sheet.reserve) for sheet in sheets)
    if total > limits.max_cells:
        raise over("sheet_too_large", f"{source_name}: its {len(sheets)} sheets span {total:,} cells together, "
                   "all read at once", "max_cells", limits, "delete the sheets not needed, or save it as .xlsx")


def _check_sheet(sheet: _Sheet, where: str, limits: WorkbookLimits) -> None:
    advice = ("delete the unused rows and columns (or the stray cell far from the table) and save it again, "
              "or split the sheet")
    if sheet.cells > limits.max_cells:
        raise over("sheet_too_large", f"{where} holds more than {sheet.cells:,} cells", "max_cells", limits, advice)
    if sheet.rows > limits.max_rows:
        raise over("sheet_too_large", f"{where} reaches row {sheet.rows:,}", "max_rows", limits, advice)
    if sheet.columns > limits.max_columns:
        raise over("sheet_too_large", f"{where} reaches column {column_letters(sheet.columns)} "
                   f"({sheet.columns:,})", "max_columns", limits, advice)
    area = max(sheet.rows * sheet.columns, sheet.reserve)
    if area > limits.max_cells:
        raise over("sheet_too_large", f"{where} declares or spans a grid of {area:,} cells", "max_cells",
                   limits, advice)
