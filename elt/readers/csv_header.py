"""A CSV file's header checked against its contract: which contract column each file column is.

Shared by the loader (before COPY) and `elt validate` (no database), so both refuse the same files with
the same words.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

from elt.contracts import Contract

UTF8_BOM = b"\xef\xbb\xbf"


class FileRejected(Exception):
    """The file as a whole breaks its contract. `rule` is a stable code; the message says what to fix."""

    def __init__(self, rule: str, message: str):
        super().__init__(message)
        self.rule = rule
        self.message = message


def split_bom(first: bytes) -> tuple[bytes, bool]:
    has_bom = first.startswith(UTF8_BOM)
    return (first[len(UTF8_BOM) :] if has_bom else first), has_bom


def read_header(chunks: Iterator[bytes]) -> tuple[list[bytes], bytes]:
    """Pull chunks until the first line is complete. Returns the chunks read and the header line bytes."""
    seen: list[bytes] = []
    buffer = b""
    for chunk in chunks:
        seen.append(chunk)
        buffer += chunk
        if b"\n" in buffer:
            return seen, buffer.split(b"\n", 1)[0]
    return seen, buffer


def map_header(contract: Contract, header_line: bytes) -> list[str]:
    """Contract column names in the file's column order. Raises FileRejected naming bad or missing columns."""
    body, _ = split_bom(header_line)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        text = body.decode("cp1252", errors="replace")
    fields = next(csv.reader(io.StringIO(text.rstrip("\r")), delimiter=contract.delimiter), [])
    if not [f for f in fields if f.strip()]:
        raise FileRejected("missing_header", "the file has no header row")
    lookup = {name: column.name for column in contract.columns for name in column.header_names()}
    mapped, unknown = [], []
    for raw_name in fields:
        name = lookup.get(raw_name.strip().lower())
        (mapped if name else unknown).append(name or raw_name.strip())
    if unknown:
        absent = [c.name for c in contract.columns if c.name not in mapped]
        raise FileRejected(
            "unexpected_columns",
            f"columns not in contract {contract.drop_type} v{contract.version}: {', '.join(unknown)}"
            + (f"; missing: {', '.join(absent)}" if absent else "")
            + f"; expected {', '.join(contract.column_names)}",
        )
    duplicated = sorted({n for n in mapped if mapped.count(n) > 1})
    if duplicated:
        raise FileRejected("duplicate_columns", f"columns appear more than once: {', '.join(duplicated)}")
    missing = [c.name for c in contract.columns if c.name not in mapped]
    missing_required = [c.name for c in contract.columns if c.required and c.name not in mapped]
    if missing_required or (missing and len(missing) == len(contract.columns)):
        raise FileRejected("missing_columns", f"required columns missing: {', '.join(missing_required or missing)}")
    return mapped


