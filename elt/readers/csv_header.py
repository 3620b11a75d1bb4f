"""A CSV file's header checked against its contract: which contract column each file column is.

Shared by the loader (before COPY), `elt validate` (no database) and the API's upload check, so all three
refuse the same files with the same words.

Two rules hold for every message here, because a file's first line is not always its header: a file
exported without its header row starts with a patient's name, date of birth and phone, which would be
"unknown column names". So a message names the contract's columns, positions (header column 3, line 2)
and rules, and never a text the file holds. And reading the header is bounded: at most MAX_HEADER_BYTES
are looked at to find its end, however long the first line is.
"""

from __future__ import annotations

import csv
import difflib
import io
import operator
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from elt.contracts import Contract, Layout

UTF8_BOM = b"\xef\xbb\xbf"
UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
# The longest first line read as a header. A contract's header is a few hundred bytes to a few KB (the Tuva
# claims layout, the widest, has 148 columns in about 3 KB); 1 MiB leaves room for a sender's 10,000 columns, and bounds what a first line without a line end
# (a 100 MB "header") costs before it is refused.
MAX_HEADER_BYTES = 1024 * 1024
# Characters that never occur in a text header (tab, CR and LF are left to the CSV parser).
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# A UTF-8 encoded character of two to four bytes: in a file that is not UTF-8 as a whole, a sign that it mixes
# encodings (Windows-1252 text practically never holds these byte pairs: 'Ã©' is the UTF-8 'é' misread).
UTF8_MULTIBYTE = re.compile(rb"[\xc2-\xdf][\x80-\xbf]|[\xe0-\xef][\x80-\xbf]{2}|[\xf0-\xf4][\x80-\xbf]{3}")
# How many positions a message lists before it says "and N more".
_SHOWN_POSITIONS = 12

# Rules under which the bytes could not be read as the format at all; every other rule means the file was
# read and breaks a whole-file rule of its contract (its header, its period, a KH03 total ...). `elt validate`
# reports the two as `unreadable` and `off_contract`.
UNREADABLE_RULES = frozenset({
    "undecodable_text", "mixed_encodings", "malformed_csv", "header_too_long", "content_mismatch",
    "unreadable_workbook",
    # a workbook refused before any engine reads it, as it would cost too much to read (elt/readers/workbook_guard.py)
    "workbook_too_large", "sheet_too_large", "zip_bomb", "unsupported_workbook", "workbook_too_slow",
})


class FileRejected(Exception):
    """The file as a whole breaks its contract. `rule` is a stable code; the message says what to fix and
    carries no value from the file (it reaches logs, the ledger, the API and the quarantine sidecar)."""

    def __init__(self, rule: str, message: str):
        super().__init__(message)
        self.rule = rule
        self.message = message

    @property
    def kind(self) -> str:
        """`unreadable` (the bytes could not be read) or `off_contract` (read, but it breaks a whole-file rule)."""
        return "unreadable" if self.rule in UNREADABLE_RULES else "off_contract"


def split_bom(first: bytes) -> tuple[bytes, bool]:
    has_bom = first.startswith(UTF8_BOM)
    return (first[len(UTF8_BOM) :] if has_bom else first), has_bom


def blank(data: bytes) -> bool:
    """Nothing but a byte order mark and white space: an empty file, as far as its contract is concerned."""
    return not data.strip(UTF8_BOM + b" \r\n\t")


def read_header(chunks: Iterator[bytes], *, limit: int = MAX_HEADER_BYTES) -> tuple[list[bytes], bytes]:
    """Pull chunks until the first line ends (LF, CRLF or a lone CR, as old Mac exports have). Returns the chunks
    read and the header line's bytes. Looks at no more than `limit` bytes: a longer first line is refused
    (header_too_long) after at most `limit` bytes plus one chunk have been pulled."""
    seen: list[bytes] = []
    head = b""
    for chunk in chunks:
        seen.append(chunk)
        head += chunk[: limit + 1 - len(head)]
        end = _line_end(head)
        if end is not None:
            return seen, head[:end]
        if len(head) > limit:
            raise FileRejected(
                "header_too_long",
                f"the first line (the header) has no line end within {limit:,} bytes: a header names the "
                "contract's columns in a few hundred bytes; is the file CSV, with a line end after the header?")
    return seen, head


def _line_end(data: bytes) -> int | None:
    ends = [position for position in (data.find(b"\n"), data.find(b"\r")) if position >= 0]
    return min(ends) if ends else None


def check_text(data: bytes) -> str:
    """The Python codec of a whole CSV file held in memory (`utf-8` or `cp1252`, the encodings the loader
    reads). Raises FileRejected naming the line: undecodable_text (NUL bytes, UTF-16, bytes that are neither)
    or mixed_encodings (not UTF-8 as a whole, yet holding UTF-8 characters)."""
    body, _ = split_bom(data)
    if body.startswith(UTF16_BOMS):
        raise FileRejected("undecodable_text", "the file is UTF-16 text; the loader reads UTF-8 or Windows-1252: "
                                               "save it again as CSV UTF-8")
    nul = body.find(b"\x00")
    if nul >= 0:
        raise FileRejected("undecodable_text", f"line {_line_of(body, nul)} holds NUL bytes: the file is not "
                                               "UTF-8 or Windows-1252 text (binary, or UTF-16?): export it as CSV UTF-8")
    try:
        body.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError as exc:
        not_utf8 = exc.start
    if UTF8_MULTIBYTE.search(body):
        raise FileRejected("mixed_encodings", mixed_encodings_message(f"line {_line_of(body, not_utf8)}"))
    try:
        body.decode("cp1252")
    except UnicodeDecodeError as exc:
        raise FileRejected("undecodable_text", f"the file is neither UTF-8 nor Windows-1252 text (line "
                                               f"{_line_of(body, exc.start)}): export it as CSV UTF-8") from None
    return "cp1252"


_LINE_END = re.compile(r"\r\n|\r|\n")
_LINE_END_NAMES = {"\r\n": "CRLF", "\r": "CR", "\n": "LF"}


def check_line_ends(text: str) -> None:
    """Every line end outside quotes is the first one's kind (LF, CRLF or CR), as Postgres's COPY requires.
    Raises FileRejected (malformed_csv) naming the line that breaks it. A quote opens or closes quoting wherever
    it stands (COPY's rule), so the text between an odd and an even quote is inside a cell."""
    first, line = None, 1
    for index, segment in enumerate(text.split('"')):
        if index % 2:
            continue
        for match in _LINE_END.finditer(segment):
            first = first or match.group()
            if match.group() != first:
                raise FileRejected("malformed_csv", f"line {line} ends with {_LINE_END_NAMES[match.group()]}, the "
                                                    f"lines before it with {_LINE_END_NAMES[first]}: save the file "
                                                    "again with one kind of line end")
            line += 1


def mixed_encodings_message(where: str) -> str:
    return (f"the file mixes encodings: it is not UTF-8 as a whole ({where} is not), yet other bytes are UTF-8 "
            "characters; read as Windows-1252 they would load garbled: save the whole file again as CSV UTF-8")


def _line_of(data: bytes, offset: int) -> int:
    """1-based physical line of a byte offset (LF, CRLF or CR line ends)."""
    before = data[:offset]
    return before.count(b"\n") + before.count(b"\r") - before.count(b"\r\n") + 1


@dataclass(frozen=True)
class HeaderMatch:
    """The layout a file's header was recognised as, the canonical column of each file column that is read, in
    file order, and where those are among the header's `width` fields (a wide layout ignores the others)."""

    layout: Layout
    columns: list[str]
    kept: tuple[int, ...] = ()
    width: int = 0

    @property
    def ignores_columns(self) -> bool:
        return len(self.kept) < self.width


def header_fields(contract: Contract, header_line: bytes) -> list[str]:
    """The header line's fields (UTF-8, else Windows-1252). Raises FileRejected when it is not CSV text."""
    body, _ = split_bom(header_line)
    if body.startswith(UTF16_BOMS) or b"\x00" in body:
        raise FileRejected("undecodable_text", "the header holds NUL bytes: the file is not UTF-8 or Windows-1252 "
                                               "text (binary, or UTF-16?): export it as CSV UTF-8")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        text = body.decode("cp1252", errors="replace")
    if _CONTROL.search(text):
        raise FileRejected("undecodable_text", "the header holds control characters: the file is not CSV text "
                                               "(binary?): export it as CSV UTF-8")
    try:
        with field_size_limit(len(text) + 1):
            return next(csv.reader(io.StringIO(text.rstrip("\r")), delimiter=contract.delimiter, strict=True), [])
    except csv.Error:  # its own messages name no value, but a fixed text is sure not to
        raise FileRejected("malformed_csv", "the header is not valid CSV (a quote that is not closed, or text "
                                            "after a closing quote)") from None


@contextmanager
def field_size_limit(limit: int):
    """The csv module refuses a field over 128 KiB; Postgres's COPY reads one of any length. Raised for a parse
    whose input is already bounded (a header line, a file held in memory), then put back."""
    previous = csv.field_size_limit()
    csv.field_size_limit(max(previous, limit))
    try:
        yield
    finally:
        csv.field_size_limit(previous)


def positions(numbers: list[int], labels: list[str] | None = None) -> str:
    """'header column 3', 'header columns 1 to 6', 'header columns 2, 5 and 9 to 40 (and 3 more ranges)'."""
    if labels is not None:
        shown = [labels[n - 1] for n in numbers[:_SHOWN_POSITIONS]]
        rest = len(numbers) - len(shown)
        names = ", ".join(shown) + (f" and {rest} more" if rest else "")
        return f"header column{'s' if len(numbers) > 1 else ''} {names}"
    ranges: list[tuple[int, int]] = []
    for n in numbers:
        if ranges and n == ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], n)
        else:
            ranges.append((n, n))
    texts = [f"{a}" if a == b else f"{a}, {b}" if b == a + 1 else f"{a} to {b}" for a, b in ranges[:_SHOWN_POSITIONS]]
    more = len(ranges) - len(texts)
    joined = texts[0] if len(texts) == 1 else ", ".join(texts[:-1]) + " and " + texts[-1]
    return (f"header column{'s' if len(numbers) > 1 else ''} {joined}"
            + (f" (and {more} more range{'s' if more > 1 else ''})" if more else ""))


def _near_misses(unknown: list[tuple[int, str]], absent: list[str]) -> list[tuple[int, str]]:
    """(position, expected column) for each unknown header close to an expected column that is missing. Only
    the expected column is ever shown, never the text that was sent."""
    hints = []
    lowered = {name.strip().lower(): name for name in absent}
    for position, raw in unknown[:_SHOWN_POSITIONS * 4]:
        close = difflib.get_close_matches(raw.strip().lower(), list(lowered), n=1)
        if close:
            hints.append((position, lowered[close[0]]))
    return hints[:_SHOWN_POSITIONS]


def _unknown_message(unknown: list[tuple[int, str]], absent: list[str], named: str, labels: list[str] | None) -> str:
    hints = _near_misses(unknown, absent)
    if len(unknown) == 1:
        said = f"{positions([unknown[0][0]], labels)} is not a column of {named}"
        return said + (f" (did you mean {hints[0][1]}?)" if hints else "")
    said = f"{positions([n for n, _ in unknown], labels)} are not columns of {named}"
    shown = "; ".join(f"{positions([n], labels).removeprefix('header ')} looks like {name}" for n, name in hints)
    return said + (f" ({shown})" if shown else "")


def _other_delimiter(contract: Contract, fields: list[str]) -> str:
    """' (is it delimited by ";" rather than ","?)' for a one-field header that holds a common other delimiter."""
    if len(fields) != 1:
        return ""
    for other in (";", "\t", "|"):
        if other != contract.delimiter and other in fields[0]:
            return f" (is it delimited by {other!r} rather than {contract.delimiter!r}?)"
    return ""


# A header the layout reads past (Layout.ignored_columns): neither a contract column nor unknown.
_IGNORED = "\x00ignored"


def map_header(contract: Contract, header_line: bytes, *, labels: list[str] | None = None) -> HeaderMatch:
    """Which layout the header is and the contract column of each file column, in file order.

    Raises FileRejected naming unknown, missing or duplicated columns (against the closest layout when the
    contract has several) by their position and the contract's names. `labels` names the positions (a
    workbook's column letters); by default they are counted from 1.
    """
    fields = header_fields(contract, header_line)
    if not [f for f in fields if f.strip()]:
        raise FileRejected("missing_header", "the file has no header row")
    attempts = []
    for layout in contract.resolved_layouts():
        lookup, ignored = contract.header_lookup(layout), layout.ignored_headers()
        mapped = [_IGNORED if raw.strip().lower() in ignored else lookup.get(raw.strip().lower()) for raw in fields]
        unknown = [(n, raw) for n, (raw, name) in enumerate(zip(fields, mapped, strict=True), start=1) if name is None]
        attempts.append((len(unknown), layout, mapped, unknown))
    # The layout with the fewest unknown headers is the one the sender meant (ties: declaration order).
    _, layout, mapped, unknown = min(attempts, key=lambda a: a[0])
    named = f"contract {contract.drop_type} v{contract.version}" + (f" (layout {layout.name})" if contract.layouts else "")
    expected = [layout.columns.get(c.name, c.name) for c in contract.columns if c.name in layout.columns]
    absent = [layout.columns.get(c, c) for c in contract.column_names if c in layout.columns and c not in mapped]
    if unknown and len(unknown) == len(fields):
        raise FileRejected(
            "unexpected_columns",
            f"none of the header's {len(fields)} fields is a column of {named}{_other_delimiter(contract, fields)}: "
            "if the file was exported without its header row, export it again with it; the first line must name "
            f"the columns: {', '.join(expected)}")
    if unknown:
        raise FileRejected(
            "unexpected_columns",
            _unknown_message(unknown, absent, named, labels)
            + (f"; missing: {', '.join(absent)}" if absent else "") + f"; expected {', '.join(expected)}",
        )
    duplicated = sorted({n for n in mapped if n != _IGNORED and mapped.count(n) > 1})
    if duplicated:
        where = "; ".join(f"{name} in {positions([i + 1 for i, m in enumerate(mapped) if m == name], labels)}"
                          for name in duplicated)
        raise FileRejected("duplicate_columns", f"columns appear more than once: {where}")
    missing = [c.name for c in contract.columns if c.name not in mapped]
    missing_required = [c for c in contract.required_columns(layout) if c not in mapped]
    if missing_required or (missing and len(missing) == len(contract.columns)):
        shown = [layout.columns.get(c, c) for c in (missing_required or missing)]
        raise FileRejected("missing_columns", f"required columns missing ({named}): {', '.join(shown)}")
    kept = tuple(i for i, name in enumerate(mapped) if name != _IGNORED)
    return HeaderMatch(layout=layout, columns=[mapped[i] for i in kept], kept=kept, width=len(fields))


# The longest record (a row whose quoted fields span lines) the column filter reads: a claim line is a few hundred
# bytes; a quote that is never closed would otherwise hold the rest of the file in memory.
MAX_FILTERED_RECORD = 16 * 1024 * 1024


def _physical_lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The lines of a stream of chunks, without their ends (LF, CRLF or a lone CR), whatever the chunk borders."""
    carry = b""
    for chunk in chunks:
        data = carry + chunk
        end = len(data) - 1 if data.endswith(b"\r") else len(data)  # a CR may be the first half of a CRLF
        cut = max(data.rfind(b"\n", 0, end), data.rfind(b"\r", 0, end))
        carry = data[cut + 1:]
        yield from data[:cut + 1].splitlines()
    if carry:
        yield from carry.splitlines()


def kept_columns(chunks: Iterable[bytes], match: HeaderMatch, delimiter: str) -> Iterator[bytes]:
    """The CSV (header first, no byte order mark) with only the columns `match` keeps, for a layout that ignores
    the others (Layout.ignored_columns): their values never reach the database. Streams, a chunk at a time. The
    kept fields keep their bytes, whatever the encoding (COPY decodes them as before); line ends become LF, also
    inside a quoted field. A line without quotes is split on the delimiter (most lines: fast); a record with
    quotes, which may span lines, is parsed by the csv module (read and written as Latin-1, which maps every
    byte to one character and back). Raises FileRejected (malformed_csv) naming the line of a record whose field
    count is not the header's, or that is not valid CSV. See docs/decisions/0021."""
    separator = delimiter.encode("latin-1")
    pick = operator.itemgetter(*match.kept) if len(match.kept) > 1 else (lambda fields: (fields[match.kept[0]],))
    lines = _physical_lines(chunks)
    number, out = 0, []
    for line in lines:
        number += 1
        if b'"' in line:
            record, first = _record(line, lines), number
            number += len(record) - 1
            out.append(_quoted_record(b"\n".join(record), first, match, delimiter, pick))
        else:
            fields = line.split(separator)
            if len(fields) != match.width:
                raise FileRejected("malformed_csv", _field_count(number, len(fields), match.width))
            out.append(separator.join(pick(fields)))
        if len(out) >= 2048:
            yield b"\n".join(out) + b"\n"
            out = []
    if out:
        yield b"\n".join(out) + b"\n"


def _record(line: bytes, lines: Iterator[bytes]) -> list[bytes]:
    """The physical lines of the record `line` starts: while a quote is open (an odd count, as COPY counts), the
    next line belongs to it. FileRejected once it is longer than MAX_FILTERED_RECORD."""
    record, quotes, size = [line], line.count(b'"'), len(line)
    while quotes % 2:
        following = next(lines, None)
        if following is None or size > MAX_FILTERED_RECORD:
            raise FileRejected("malformed_csv", "a quoted field is not closed (a quote that is not closed, or a "
                                                "field longer than 16 MiB)")
        record.append(following)
        quotes, size = quotes + following.count(b'"'), size + len(following)
    return record


def _field_count(line: int, found: int, width: int) -> str:
    return f"line {line} has {found} field{'s' if found != 1 else ''}, the header has {width}"


def _quoted_record(record: bytes, line: int, match: HeaderMatch, delimiter: str, pick) -> bytes:
    text = record.decode("latin-1")
    try:
        with field_size_limit(len(text) + 1):
            rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True))
    except csv.Error:  # its messages name no value, but a fixed text is sure not to
        raise FileRejected("malformed_csv", f"line {line} is not valid CSV (a quote that is not closed, or text "
                                            "after a closing quote)") from None
    fields = rows[0] if len(rows) == 1 else []
    if len(fields) != match.width:
        raise FileRejected("malformed_csv", _field_count(line, len(fields), match.width))
    out = io.StringIO()
    # The line end given is the one the writer quotes a field for holding (with "" it would not quote a newline).
    csv.writer(out, delimiter=delimiter, lineterminator="\n").writerow(pick(fields))
    return out.getvalue()[:-1].encode("latin-1")
