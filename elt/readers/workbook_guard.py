"""What an untrusted workbook may cost, checked before any workbook engine sees its bytes.

python-calamine (Rust) and openpyxl believe what a workbook says about itself. A 5 KB .xlsx holding one cell
at A1 and one at XFD1048576 makes calamine allocate the grid between them, 17 billion cells (550 GB), and a
failed allocation in Rust aborts the whole process: the API worker, the loader, `elt validate`. A zip bomb
(a small part that inflates to gigabytes), a declared used range of the whole sheet (openpyxl pads every row
to it), an .xls whose DIMENSIONS record or CFB header claims gigabytes do the same. So `check_workbook` reads
the structure an engine would trust, bounded by `WorkbookLimits`, and refuses a file before an engine runs:

* .xlsx (a zip): the file size; the zip's central directory (number of parts, before it is parsed); every
  part's compression ratio, declared and as actually inflated; the inflated bytes of all parts together,
  counted while inflating (declared sizes can lie); for each part holding cells, the last row and column
  any cell reaches, the number of cells, and the declared `<dimension ref>`. Zips that calamine would read
  as .xlsb or OpenDocument (binary or differently shaped cells) are refused: the contracts read .xlsx.
* .xls (an OLE2 compound document): see `elt.readers.xls_guard`.

The cell scan is a byte search, not an XML parse (the parse would cost as much as the read it protects):
canonical cells (`<c r="B2"`) are counted with `bytes.count`, and the extent is found by checking that
no cell lies beyond the extent seen so far, a regex that rarely matches. A sheet written any other way
(cells without `r`, prefixed tags, other quoting) is scanned tag by tag, positioning cells as calamine
does. Decisions and numbers: docs/decisions/0012-workbook-cost-limits.md.

Refusals are `FileRejected` with rule `workbook_too_large`, `sheet_too_large`, `zip_bomb`,
`unsupported_workbook` or `unreadable_workbook` (and `workbook_too_slow` from the openpyxl reader, which counts
as it reads: elt/readers/spreadsheet.py); messages name the part, the limit and its setting, and never a
cell's value. Bytes in; out, only when asked (`copy_to`), the .xlsx's parts as inflated here, stored
uncompressed for calamine to read instead of inflating them again (`_StoredCopy`).
"""

from __future__ import annotations

import re
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from io import BytesIO
from typing import BinaryIO

from elt.readers.csv_header import FileRejected

ZIP_MAGIC = b"PK\x03\x04"
OLE_MAGIC = bytes.fromhex("D0CF11E0A1B11AE1")
CHUNK = 4 * 1024 * 1024  # inflated bytes scanned at a time
RATIO_GRACE = 1024 * 1024  # a part may inflate this far before its compression ratio is judged
CENTRAL_ENTRY_ROOM = 512  # bytes of zip directory allowed per part (an .xlsx entry takes about 100)
EXCEL_MAX_ROWS, EXCEL_MAX_COLUMNS = 1_048_576, 16_384


@dataclass(frozen=True)
class WorkbookLimits:
    """The most one workbook may cost. Defaults admit NHS England's KH03 workbooks (about 200 rows by 80
    columns) and ./start.sh bench excel's 100,000-trust sheet (100,018 x 23) with room to spare. Each field is
    the setting `WORKBOOK_<FIELD>` (elt/config.py), where it is described."""

    max_file_bytes: int = 100 * 1024 * 1024
    max_parts: int = 10_000
    max_inflated_bytes: int = 512 * 1024 * 1024
    max_compression_ratio: int = 100
    max_rows: int = 200_000
    max_columns: int = 1_000
    max_cells: int = 5_000_000
    max_seconds: float = 120.0

    @classmethod
    def setting(cls, field: str) -> str:
        """The environment variable of a field: `max_rows` -> WORKBOOK_MAX_ROWS."""
        return f"WORKBOOK_{field.upper()}"


DEFAULT_LIMITS = WorkbookLimits()
LIMIT_FIELDS = tuple(f.name for f in fields(WorkbookLimits))


def over(rule: str, what: str, field: str, limits: WorkbookLimits, advice: str) -> FileRejected:
    """A refusal naming what broke which limit, the setting that holds it, and what to do."""
    limit = getattr(limits, field)
    return FileRejected(rule, f"{what}; the limit is {limit:,} ({WorkbookLimits.setting(field)}): {advice}")


def check_workbook(data: bytes, source_name: str, limits: WorkbookLimits = DEFAULT_LIMITS, *,
                   copy_to: BinaryIO | None = None) -> bool:
    """Refuse (FileRejected) a workbook whose reading would cost more than `limits`; else return whether
    `copy_to` (an empty seekable binary file, or None) now holds the .xlsx's parts as the check inflated them,
    stored uncompressed (`_StoredCopy`). False for an .xls, without `copy_to`, or when no faithful copy could
    be made: then an engine reads `data`."""
    if len(data) > limits.max_file_bytes:
        raise over("workbook_too_large", f"{source_name} is {len(data):,} bytes", "max_file_bytes", limits,
                   "split the workbook, or raise the limit if the file is trusted")
    if data.startswith(OLE_MAGIC):
        from elt.readers.xls_guard import check_xls

        check_xls(data, source_name, limits)
        return False
    return _check_zip(data, source_name, limits, copy_to)


# --- the zip container -------------------------------------------------------------------------------------
def _eocd(data: bytes, source_name: str) -> tuple[int, int]:
    """(parts, bytes) the zip's end-of-central-directory record declares (zip64 followed)."""
    at = data.rfind(b"PK\x05\x06", max(0, len(data) - 22 - 65535))
    if at < 0 or at + 22 > len(data):
        raise FileRejected("unreadable_workbook", f"{source_name} is not a readable xlsx workbook (no zip "
                                                  "directory at its end: cut short, or not a workbook at all): "
                                                  "download or export it again")
    if data.rfind(b"PK\x05\x06", max(0, len(data) - 22 - 65535), at) >= 0:
        # two directory ends: zip readers could disagree on which parts the workbook has
        raise FileRejected("unreadable_workbook", f"{source_name} is not a readable xlsx workbook (two zip "
                                                  "directories): export it again from Excel")
    entries, size = struct.unpack_from("<HI", data, at + 10)
    locator = at - 20
    if (entries == 0xFFFF or size == 0xFFFFFFFF) and locator >= 0 and data[locator:locator + 4] == b"PK\x06\x07":
        record = struct.unpack_from("<Q", data, locator + 8)[0]
        if data[record:record + 4] == b"PK\x06\x06" and record + 56 <= len(data):
            entries, size = struct.unpack_from("<QQ", data, record + 32)
    return entries, size


def _open_zip(data: bytes, source_name: str, limits: WorkbookLimits) -> zipfile.ZipFile:
    entries, size = _eocd(data, source_name)
    if entries > limits.max_parts or size > limits.max_parts * CENTRAL_ENTRY_ROOM:
        raise over("workbook_too_large", f"{source_name}'s zip directory declares {entries:,} parts in "
                   f"{size:,} bytes", "max_parts", limits, "a workbook has tens of parts: export it again")
    try:
        archive = zipfile.ZipFile(BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError) as exc:
        raise FileRejected("unreadable_workbook", f"{source_name} is not a readable xlsx workbook (damaged zip: "
                                                  f"{type(exc).__name__}): download or export it again") from exc
    if len(archive.infolist()) > limits.max_parts:
        raise over("workbook_too_large", f"{source_name} holds {len(archive.infolist()):,} parts", "max_parts",
                   limits, "a workbook has tens of parts: export it again")
    return archive


def _check_zip(data: bytes, source_name: str, limits: WorkbookLimits, copy_to: BinaryIO | None) -> bool:
    archive = _open_zip(data, source_name, limits)
    parts = archive.infolist()
    names = {info.filename.lower() for info in parts}
    if "xl/workbook.bin" in names or "content.xml" in names:
        kind = "an Excel binary (.xlsb)" if "xl/workbook.bin" in names else "an OpenDocument (.ods)"
        raise FileRejected("unsupported_workbook", f"{source_name} is {kind} workbook, not an .xlsx: open it "
                                                   f"in Excel and save it as .xlsx")
    for info in parts:  # what the directory declares, before anything is inflated
        if info.flag_bits & 0x1:
            raise FileRejected("unreadable_workbook", f"{source_name} is encrypted (part {info.filename!r}): "
                                                      "save it without a password")
        if info.file_size > RATIO_GRACE and info.file_size > limits.max_compression_ratio * max(info.compress_size, 1):
            raise _bomb(source_name, info, info.file_size, "declares", limits)
    declared = sum(info.file_size for info in parts)
    if declared > limits.max_inflated_bytes:
        raise over("workbook_too_large", f"{source_name}'s parts declare {declared:,} bytes inflated",
                   "max_inflated_bytes", limits, "split the workbook, or raise the limit if the file is trusted")
    copy = _StoredCopy(copy_to) if copy_to is not None and _StoredCopy.faithful(parts, limits) else None
    inflated = 0
    for info in parts:  # what they really inflate to (declared sizes can lie), and the cells of each sheet
        try:
            inflated += _scan_part(data, info, source_name, limits, already=inflated, tag_by_tag=False, copy=copy)
        except _Unusual:
            inflated += _scan_part(data, info, source_name, limits, already=inflated, tag_by_tag=True, copy=copy)
    return copy is not None and copy.finish()


def _scan_part(data: bytes, info: zipfile.ZipInfo, source_name: str, limits: WorkbookLimits, *, already: int,
               tag_by_tag: bool, copy: _StoredCopy | None) -> int:
    """Inflate one part under the limits and, when it is XML, scan its cells (and copy them to `copy`). Returns
    its inflated size."""
    scan = _SheetScan(source_name, info.filename, limits, tag_by_tag=tag_by_tag)
    if copy is not None:
        copy.begin(info)
    size = 0
    for chunk in _inflate(data, info, source_name, limits, already=already):
        size += len(chunk)
        scan.feed(chunk)
        if copy is not None:
            copy.write(chunk)
    scan.finish()
    if copy is not None:
        copy.end(info, size)
    return size


class _StoredCopy:
    """The parts of an .xlsx as the check inflates them, written to `out` as a zip of stored (uncompressed)
    parts. calamine is handed this copy instead of the original, so it parses the very bytes the check scanned
    and does not inflate the workbook a second time: about 0.2 s of CPU on ./start.sh bench excel's 96 MB sheet
    (decision 0012). Each part keeps the CRC-32 the original declares; calamine checks the inflated bytes
    against it as it would have on the original (computing it here would cost more than the inflate saved).
    A write that fails (a full disk) marks the copy unusable; the check goes on, and calamine reads the
    original instead."""

    LOCAL, CENTRAL, END = struct.Struct("<IHHHHHIIIHH"), struct.Struct("<IHHHHHHIIIHHHHHII"), struct.Struct("<IHHHHIIH")
    DOS_DATE = 0x21  # 1980-01-01: the parts' dates are not copied (no engine reads them)

    def __init__(self, out: BinaryIO) -> None:
        self.out, self.central, self.parts, self.start, self.usable = out, bytearray(), 0, 0, True

    @classmethod
    def faithful(cls, parts: list[zipfile.ZipInfo], limits: WorkbookLimits) -> bool:
        """Whether the copy can say what the original says: every name ASCII as stored (zipfile's decoding of
        other names, or of a name with a NUL in it, need not give back its bytes) and none repeated (zip
        readers may disagree on which of two counts), and a plain zip can hold it (no zip64: under 65,535
        parts, and offsets under 4 GiB even if every part inflates to the limit)."""
        names = [info.orig_filename for info in parts]
        room = sum(cls.LOCAL.size + cls.CENTRAL.size + 2 * len(name) for name in names) + cls.END.size
        return (len(parts) < 0xFFFF and len(set(names)) == len(names) and all(map(str.isascii, names))
                and all(info.filename == info.orig_filename for info in parts)
                and limits.max_inflated_bytes + room < 0xFFFFFFFF)

    def begin(self, info: zipfile.ZipInfo) -> None:
        """A part's local header, its sizes still 0. A part scanned again (tag by tag) starts over here."""
        name = info.filename.encode("ascii")
        header = self.LOCAL.pack(0x04034B50, 20, 0, 0, 0, self.DOS_DATE, info.CRC, 0, 0, len(name), 0) + name
        self._step(lambda out: (out.seek(self.start), out.truncate(), out.write(header)))

    def write(self, chunk: bytes) -> None:
        self._step(lambda out: out.write(chunk))

    def end(self, info: zipfile.ZipInfo, size: int) -> None:
        """The part's sizes into its local header, and its entry in the central directory."""
        name = info.filename.encode("ascii")
        sizes = struct.pack("<II", size, size)
        self._step(lambda out: (out.seek(self.start + 18), out.write(sizes), out.seek(0, 2)))
        self.central += self.CENTRAL.pack(0x02014B50, 20, 20, 0, 0, 0, self.DOS_DATE, info.CRC, size, size,
                                          len(name), 0, 0, 0, 0, 0, self.start) + name
        self.parts += 1
        self.start += self.LOCAL.size + len(name) + size

    def finish(self) -> bool:
        """The central directory and its end; whether the copy is whole."""
        end = self.END.pack(0x06054B50, 0, 0, self.parts, self.parts, len(self.central), self.start, 0)
        self._step(lambda out: (out.write(bytes(self.central) + end), out.flush()))
        return self.usable

    def _step(self, step: Callable[[BinaryIO], object]) -> None:
        """One step of writing the copy; a failed one (OSError: a full disk) makes the copy unusable, and no
        later step is taken."""
        if self.usable:
            try:
                step(self.out)
            except OSError:
                self.usable = False


def sheet_extent(xml: bytes, limits: WorkbookLimits = DEFAULT_LIMITS) -> tuple[int, int, int]:
    """(last row, last column, cells) of one sheet part's XML as the scan finds them (FileRejected beyond
    `limits`): what the limits are compared with."""
    for tag_by_tag in (False, True):
        scan = _SheetScan("the sheet", "sheet.xml", limits, tag_by_tag=tag_by_tag)
        try:
            for at in range(0, len(xml), CHUNK):
                scan.feed(xml[at:at + CHUNK])
            scan.finish()
        except _Unusual:
            continue
        return scan.rows, scan.columns, scan.cells
    raise AssertionError("unreachable: the tag-by-tag scan never gives up")


def _bomb(source_name: str, info: zipfile.ZipInfo, size: int, verb: str, limits: WorkbookLimits) -> FileRejected:
    ratio = size // max(info.compress_size, 1)
    return over("zip_bomb", f"{source_name}: part {info.filename!r} {verb} {size:,} bytes from "
                f"{info.compress_size:,} compressed, {ratio:,} times over", "max_compression_ratio", limits,
                "that is how a zip bomb looks (a real workbook compresses 5 to 20 times): export it again")


def _part_bytes(data: bytes, info: zipfile.ZipInfo, source_name: str) -> memoryview:
    """The compressed bytes of one part, located through its local header (as the engines locate them)."""
    at = info.header_offset
    if data[at:at + 4] != ZIP_MAGIC or at + 30 > len(data):
        raise FileRejected("unreadable_workbook", f"{source_name}: part {info.filename!r} is missing or "
                                                  "damaged (truncated zip?): download or export it again")
    name_length, extra_length = struct.unpack_from("<HH", data, at + 26)
    start = at + 30 + name_length + extra_length
    end = start + info.compress_size
    if end > len(data):
        raise FileRejected("unreadable_workbook", f"{source_name}: part {info.filename!r} runs past the end "
                                                  "of the file (truncated): download or export it again")
    return memoryview(data)[start:end]


def _inflate(data: bytes, info: zipfile.ZipInfo, source_name: str, limits: WorkbookLimits, *,
             already: int) -> Iterator[bytes]:
    """The part's inflated bytes in chunks, stopping with a refusal as soon as the part's real compression
    ratio or the workbook's inflated total goes over its limit (declared sizes are not trusted)."""
    raw = _part_bytes(data, info, source_name)
    if info.compress_type == zipfile.ZIP_STORED:
        pieces: Iterator[bytes] = (bytes(raw[i:i + CHUNK]) for i in range(0, len(raw), CHUNK))
    elif info.compress_type == zipfile.ZIP_DEFLATED:
        pieces = _deflated(raw, info, source_name)
    else:
        raise FileRejected("unsupported_workbook", f"{source_name}: part {info.filename!r} is compressed with "
                                                   f"method {info.compress_type}, which Excel never uses: save "
                                                   "it again from Excel")
    total = 0
    for piece in pieces:
        total += len(piece)
        if total > RATIO_GRACE and total > limits.max_compression_ratio * max(len(raw), 1):
            raise _bomb(source_name, info, total, "inflates to more than", limits)
        if already + total > limits.max_inflated_bytes:
            lied = f" (it declares {info.file_size:,})" if total > info.file_size else ""
            raise over("zip_bomb" if lied else "workbook_too_large", f"{source_name}'s parts inflate to more "
                       f"than {already + total:,} bytes, part {info.filename!r} to {total:,}{lied}",
                       "max_inflated_bytes", limits, "split the workbook, or raise the limit if the file is trusted")
        yield piece


def _deflated(raw: memoryview, info: zipfile.ZipInfo, source_name: str) -> Iterator[bytes]:
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    step = 1024 * 1024  # compressed bytes per call; each call inflates at most CHUNK
    try:
        for i in range(0, len(raw), step):
            pending = bytes(raw[i:i + step])
            while pending and not inflater.eof:
                out = inflater.decompress(pending, CHUNK)
                pending = inflater.unconsumed_tail
                if out:
                    yield out
            if inflater.eof:
                return
        tail = inflater.flush()
        if tail:
            yield tail
    except zlib.error as exc:
        raise FileRejected("unreadable_workbook", f"{source_name}: part {info.filename!r} is damaged (bad "
                                                  "compressed data): download or export it again") from exc


# --- the cells of a sheet ------------------------------------------------------------------------------------
CANONICAL = re.compile(rb'<c r="([A-Z]{1,3})([1-9][0-9]{0,6})"')
UTF16_TAG = re.compile(rb"<\x00[\x21-\x7e]\x00|\x00<\x00[\x21-\x7e]")
PREFIXED = re.compile(rb":(?:c|row)[\s/>]")  # a prefixed c or row tag (x:c): scanned tag by tag
DIMENSION = re.compile(rb'<(?:[A-Za-z_][\w.\-]*:)?dimension\s[^>]*?\bref\s*=\s*["\']([^"\']*)["\']')
TAG_START = re.compile(rb"<(?:[A-Za-z_][\w.\-]*:)?(?:row|c)(?=[\s/>])|</(?:[A-Za-z_][\w.\-]*:)?(?:row|c)(?=[\s>])")
TAG = re.compile(rb"<(/?)(?:[A-Za-z_][\w.\-]*:)?(row|c)((?:\s+[^\s=/>]+\s*=\s*(?:\"[^\"]*\"|'[^']*'))*)\s*(/?)>")
R_ATTRIBUTE = re.compile(rb"""\sr\s*=\s*(?:"([^"]*)"|'([^']*)')""")
REF = re.compile(rb"([A-Z]+)([1-9][0-9]*)")


def column_number(letters: bytes) -> int:
    number = 0
    for letter in letters[:8]:  # longer is beyond any limit anyway
        number = number * 26 + letter - 64
    return number if len(letters) <= 8 else 1 << 40


def column_letters(number: int) -> str:
    """Excel's name of the 1-based column `number`: 1 -> A, 27 -> AA (the readers and their messages share it)."""
    letters = ""
    while number > 0:
        number, rest = divmod(number - 1, 26)
        letters = chr(65 + rest) + letters
    return letters or "A"


def _up_to(value: bytes, first: int, lowest: int, highest: int) -> list[bytes]:
    """Regex options for the strings of value's length, over characters lowest..highest (the first one from
    `first`), that sort at or before `value`: one option per position where a smaller character may stand."""
    any_rest = {ord("0"): b"[0-9]", ord("A"): b"[A-Z]"}[lowest]
    options = []
    for i, character in enumerate(value):
        top = character if i == len(value) - 1 else character - 1
        bottom = first if i == 0 else lowest
        if top >= bottom:
            rest = len(value) - i - 1
            options.append(value[:i] + b"[%c-%c]" % (bottom, top) + (any_rest + b"{%d}" % rest if rest else b""))
    return options


def _at_most_number(n: int) -> bytes:
    """A regex for the decimal numbers 1 to n, written without leading zeros. Numbers as long as n come
    first: most rows near the last one seen are (the order makes the regex several times faster)."""
    digits = str(n).encode()
    shorter = [b"[1-9][0-9]{0,%d}" % (len(digits) - 2)] if len(digits) > 1 else []
    return b"(?:" + b"|".join(_up_to(digits, ord("1"), ord("0"), ord("9")) + shorter) + b")"


def _at_most_letters(n: int) -> bytes:
    """A regex for the column letters A to column n (1-based), as long as n's first."""
    letters = column_letters(n).encode()
    shorter = [b"[A-Z]{1,%d}" % (len(letters) - 1)] if len(letters) > 1 else []
    return b"(?:" + b"|".join(_up_to(letters, ord("A"), ord("A"), ord("Z")) + shorter) + b")"


_OUTSIDE: dict[tuple[int, int], re.Pattern[bytes]] = {}


def _outside(rows: int, columns: int) -> re.Pattern[bytes]:
    """A cell tag that is not `<c r="..."` with an address inside A1:<columns><rows>: a cell beyond that
    extent, or one written another way (no `r`, `r` not first, other quoting, `<c>`, `<c/>`). `<col`,
    `<cfRule` and the other elements named c-something are left alone. One search per segment: per cell
    it costs one failed lookahead, as little as a byte search can."""
    key = (rows, columns)
    if key not in _OUTSIDE:
        if len(_OUTSIDE) > 256:
            _OUTSIDE.clear()
        inside = (_at_most_letters(columns) + _at_most_number(rows)) if rows and columns else b"(?!)"
        _OUTSIDE[key] = re.compile(rb'<c(?! r="' + inside + rb'")(?![a-z])')
    return _OUTSIDE[key]


class _Unusual(Exception):
    """The part is not written the canonical way: it is scanned again, tag by tag."""


class _SheetScan:
    """The extent (last row and column any cell reaches, 1-based) and the number of cells of one part, fed in
    chunks of its inflated bytes. Every part is scanned, whatever its name: the workbook's relationships may
    make any part a sheet. A part that does not start as XML (an image, printer settings; or a sheet with junk
    before its root, which the XML reader would still read) is scanned tag by tag, tolerating bytes that are
    no tag."""

    def __init__(self, source_name: str, part: str, limits: WorkbookLimits, *, tag_by_tag: bool) -> None:
        self.source_name, self.part, self.limits = source_name, part, limits
        self.rows = self.columns = self.cells = 0
        self.carry = b""
        self.xml: bool | None = None
        self.tags = _TagScan(self) if tag_by_tag else None
        self.dimension_seen = False

    def feed(self, chunk: bytes) -> None:
        if self.xml is None:
            self.xml = self._is_xml(chunk)
            if not self.xml:
                self.tags = _TagScan(self, tolerant=True)
        text = self.carry + chunk if self.carry else chunk
        cut = text.rfind(b"<")  # a tag may go on in the next chunk: keep it for then
        if cut < 0 or len(text) - cut > CHUNK:
            cut = len(text)
        self.carry = text[cut:]
        self._segment(text, cut)

    def _is_xml(self, head: bytes) -> bool:
        if head[:2] in (b"\xff\xfe", b"\xfe\xff") or UTF16_TAG.match(head):
            raise FileRejected("unsupported_workbook", f"{self.source_name}: part {self.part!r} is XML in UTF-16, "
                                                       "which Excel never writes: save the workbook again from Excel")
        return head.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] == b"<"

    def finish(self) -> None:
        if self.carry:
            self._segment(self.carry, len(self.carry))
            self.carry = b""
        self._check()

    def _segment(self, text: bytes, end: int) -> None:
        """Scan text[:end]: whole tags only."""
        if not self.dimension_seen:
            self._dimension(text, end)
        if self.tags is not None:
            self.tags.scan(text, end)
        else:
            self._fast(text, end)
        self._check()

    def _fast(self, text: bytes, end: int) -> None:
        """Every cell `<c r="B2"`: counted with a byte search; the extent taken from the last complete row
        (rows come in order, cells in a row too) and checked with one regex search for a cell outside it,
        which rarely matches. A match is a cell beyond it (then every address here is read) or a cell
        written another way (_Unusual: the part is scanned again, tag by tag)."""
        if PREFIXED.search(text, 0, end):
            raise _Unusual
        self.cells += text.count(b'<c r="', 0, end)
        row_end = text.rfind(b"</row>", 0, end)
        widest = CANONICAL.match(text, max(text.rfind(b'<c r="', 0, row_end if row_end > 0 else end), 0))
        last = CANONICAL.match(text, max(text.rfind(b'<c r="', 0, end), 0))
        for cell in (widest, last):
            if cell:
                self.note(int(cell[2]), column_number(cell[1]))
        if _outside(self.rows, self.columns).search(text, 0, end):
            addresses = CANONICAL.findall(text, 0, end)
            for letters in {letters for letters, _ in addresses}:
                self.note(0, column_number(letters))
            self.note(max((int(digits) for _, digits in addresses), default=0), 0)
            self._check_extent(self.rows, self.columns)
            if _outside(self.rows, self.columns).search(text, 0, end):
                raise _Unusual

    def note(self, row: int, column: int) -> None:
        if row > self.rows:
            self.rows = row
        if column > self.columns:
            self.columns = column

    def _dimension(self, text: bytes, end: int) -> None:
        """`<dimension ref="A1:W200"/>`, the used range the sheet declares before its cells (openpyxl pads
        every row to it)."""
        data_at = text.find(b"sheetData", 0, end)
        self.dimension_seen = data_at >= 0
        match = DIMENSION.search(text, 0, data_at if data_at >= 0 else end)
        if match is None:
            return
        self.dimension_seen = True
        for ref in match[1].split(b":"):
            parsed = REF.fullmatch(ref.strip().upper())
            if parsed and len(parsed[2]) <= 8:
                self._check_extent(int(parsed[2]), column_number(parsed[1]),
                                   declared=match[1].decode("ascii", "replace")[:40])

    def _check(self) -> None:
        if self.cells > self.limits.max_cells:
            raise over("sheet_too_large", f"{self.source_name}: sheet part {self.part!r} holds more than "
                       f"{self.cells:,} cells", "max_cells", self.limits, _SHRINK)
        self._check_extent(self.rows, self.columns)

    def _check_extent(self, rows: int, columns: int, *, declared: str | None = None) -> None:
        limits = self.limits
        where = f"{self.source_name}: sheet part {self.part!r} " + (
            f"declares its used range as {declared}, which reaches" if declared else "has a cell at")
        if rows > limits.max_rows:
            raise over("sheet_too_large", f"{where} row {rows:,}", "max_rows", limits, _SHRINK)
        if columns > limits.max_columns:
            raise over("sheet_too_large", f"{where} column {column_letters(columns)} ({columns:,})",
                       "max_columns", limits, _SHRINK)
        if rows * columns > limits.max_cells:
            raise over("sheet_too_large", f"{where} {column_letters(columns)}{rows}: a grid of {rows:,} rows x "
                       f"{columns:,} columns = {rows * columns:,} cells from A1", "max_cells", limits, _SHRINK)


_SHRINK = ("delete the unused rows and columns (or the stray cell far from the table) and save it again, "
           "or split the sheet")


class _TagScan:
    """Cells positioned tag by tag as python-calamine positions them: a cell's own `r`, else the row's `r`
    (or the row after the previous one) and the column after the previous cell. Self-closing `<c/>` and
    `<row/>` hold no value for calamine but count here too (openpyxl reads them)."""

    def __init__(self, sheet: _SheetScan, *, tolerant: bool = False) -> None:
        self.sheet, self.tolerant = sheet, tolerant
        self.row = 0  # 0-based, as calamine counts
        self.column = 0

    def scan(self, text: bytes, end: int) -> None:
        for start in TAG_START.finditer(text, 0, end):
            tag = TAG.match(text, start.start(), end)
            if tag is None:
                if self.tolerant:  # bytes of an image or the like that happen to read "<c "
                    continue
                self._malformed("row or cell tag")
            self._tag(tag[1] == b"/", tag[2], tag[3], tag[4] == b"/")
            if self.sheet.cells > self.sheet.limits.max_cells:
                return  # refused by the caller's check

    def _tag(self, closing: bool, name: bytes, attributes: bytes, empty: bool) -> None:
        if closing:
            if name == b"row":
                self.row, self.column = self.row + 1, 0
            return
        reference = R_ATTRIBUTE.search(attributes)
        value = None if reference is None else (reference[1] if reference[1] is not None else reference[2])
        if name == b"row":
            if value is not None:
                if not value.isdigit() or not 0 < len(value) <= 8 or int(value) < 1:
                    self._malformed("row number")
                self.sheet.note(int(value), 0)
                if not empty:
                    self.row = int(value) - 1
            return
        self.sheet.cells += 1
        if value is not None:
            parsed = REF.fullmatch(value)
            if parsed is None or len(parsed[2]) > 8:
                self._malformed("cell address")
            row, column = int(parsed[2]) - 1, column_number(parsed[1]) - 1
        else:
            row, column = self.row, self.column
        self.sheet.note(row + 1, column + 1)
        if not empty:
            self.column = column + 1

    def _malformed(self, what: str) -> None:
        raise FileRejected("unreadable_workbook", f"{self.sheet.source_name}: part {self.sheet.part!r} has a "
                                                  f"malformed {what}: save the workbook again from Excel")
