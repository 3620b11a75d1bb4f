"""Checks a drop passes before it is accepted into the landing bucket, so that whoever drops a file by hand (the
API's upload, a fetch by URL) hears at once what is wrong with it instead of finding it quarantined the
next morning.

* `check_content(extension, data)`: the bytes are what the name says: an .xlsx is a zip (`PK\\x03\\x04`), an
  .xls an OLE compound document (`D0 CF 11 E0 A1 B1 1A E1`), a .csv text in UTF-8 or Windows-1252 without
  NUL bytes (the two encodings the loader reads).
* `check_drop(contract, data, source_name, limits=...)`: the whole-file rules of the drop's contract, with
  the same readers (and so the same words) as the load: a CSV is not empty, its header maps to a layout, its
  text is UTF-8 or Windows-1252 throughout (not a mix of the two), its line ends are of one kind and it has
  rows; a KH03 workbook passes every KH03 check; another workbook has a sheet with the contract's header (the
  contract's reader says which: `Reader.checks`, elt/readers). A workbook is first held to `limits` (what it
  may cost to read: elt/readers/workbook_guard.py), so a hostile one is refused, not read. Row-level problems
  are not refusals: the load keeps bad rows aside with their reasons, as it does for any drop. It returns the
  reporting period the contents establish (a KH03 workbook's quarter), which the API needs to tell a new
  quarter from a revision of a loaded one.

Both raise `FileRejected(rule, message)`. Pure: bytes in, no storage, no database.
"""

from __future__ import annotations

from datetime import date

from elt.contracts import Contract
from elt.readers import reader_for
from elt.readers.csv_header import UTF8_BOM, FileRejected
from elt.readers.workbook_guard import DEFAULT_LIMITS, WorkbookLimits

XLSX_MAGIC = b"PK\x03\x04"  # every .xlsx is a zip archive
XLS_MAGIC = bytes.fromhex("D0CF11E0A1B11AE1")  # .xls: an OLE2 compound document
MAGIC = {"xlsx": XLSX_MAGIC, "xls": XLS_MAGIC}
WHAT = {"xlsx": "an Excel .xlsx workbook", "xls": "an Excel 97-2003 .xls workbook", "csv": "CSV text"}


def sniff(data: bytes) -> str | None:
    """What the bytes look like: 'xlsx', 'xls', 'csv' (text), or None."""
    for extension, magic in MAGIC.items():
        if data.startswith(magic):
            return extension
    if b"\x00" in data:
        return None
    body = data[len(UTF8_BOM):] if data.startswith(UTF8_BOM) else data
    for encoding in ("utf-8", "cp1252"):
        try:
            body.decode(encoding)
        except UnicodeDecodeError:
            continue
        return "csv"
    return None


def check_content(extension: str, data: bytes) -> None:
    """The content is what the extension (`xlsx`, `xls` or `csv`, no dot) says."""
    extension = extension.lower().lstrip(".")
    if not data:
        raise FileRejected("empty_file", "the file is empty")
    found = sniff(data)
    if found == extension:
        return
    said = f"the name says .{extension} ({WHAT.get(extension, extension)})"
    if found in MAGIC:
        raise FileRejected("content_mismatch", f"{said} but the content is {WHAT[found]}: rename it to "
                                               f".{found}, or save it as {WHAT.get(extension, extension)}")
    if found == "csv":
        raise FileRejected("content_mismatch", f"{said} but the content is plain text: rename it to .csv if it "
                                               f"is CSV, or upload the workbook itself")
    if extension == "csv":
        raise FileRejected("content_mismatch", f"{said} but the content is neither UTF-8 nor Windows-1252 text "
                                               f"(it holds NUL bytes or undecodable bytes): export it again as CSV "
                                               f"(UTF-8)")
    raise FileRejected("content_mismatch", f"{said} but the content is not a workbook: export it again from Excel")


def check_drop(contract: Contract, data: bytes, source_name: str, *,
               limits: WorkbookLimits = DEFAULT_LIMITS) -> tuple[date, date] | None:
    """The file-level rules of `contract`, as its reader checks them (Reader.checks); FileRejected (rule, message)
    naming what to fix. Returns the reporting period the file's own contents establish (a KH03 workbook's
    quarter), None when its key says it."""
    period = reader_for(contract).checks(contract, data, name=source_name, limits=limits)
    return period.dates if period else None
