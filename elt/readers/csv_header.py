"""A CSV file's header checked against its contract: which contract column each file column is.

Shared by the loader (before COPY) and `elt validate` (no database), so both refuse the same files with
the same words.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass

from elt.contracts import Contract, Layout

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


@dataclass(frozen=True)
class HeaderMatch:
    """The layout a file's header was recognised as, and the canonical column of each file column."""

    layout: Layout
    columns: list[str]


def map_header(contract: Contract, header_line: bytes) -> HeaderMatch:
    """Which layout the header is and the contract column of each file column, in file order.

    Raises FileRejected naming unknown, missing or duplicated columns (against the closest layout when
    the contract has several).
    """
    body, _ = split_bom(header_line)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        text = body.decode("cp1252", errors="replace")
    fields = next(csv.reader(io.StringIO(text.rstrip("\r")), delimiter=contract.delimiter), [])
    if not [f for f in fields if f.strip()]:
        raise FileRejected("missing_header", "the file has no header row")
    attempts = []
    for layout in contract.resolved_layouts():
        lookup = contract.header_lookup(layout)
        mapped = [lookup.get(raw.strip().lower()) for raw in fields]
        unknown = [raw.strip() for raw, name in zip(fields, mapped, strict=True) if name is None]
        attempts.append((len(unknown), layout, mapped, unknown))
    # The layout with the fewest unknown headers is the one the sender meant (ties: declaration order).
    _, layout, mapped, unknown = min(attempts, key=lambda a: a[0])
    named = f"contract {contract.drop_type} v{contract.version}" + (f" (layout {layout.name})" if contract.layouts else "")
    expected = [layout.columns.get(c.name, c.name) for c in contract.columns if c.name in layout.columns]
    if unknown:
        absent = [layout.columns.get(c, c) for c in contract.column_names if c in layout.columns and c not in mapped]
        raise FileRejected(
            "unexpected_columns",
            f"columns not in {named}: {', '.join(unknown)}"
            + (f"; missing: {', '.join(absent)}" if absent else "")
            + f"; expected {', '.join(expected)}",
        )
    duplicated = sorted({n for n in mapped if mapped.count(n) > 1})
    if duplicated:
        raise FileRejected("duplicate_columns", f"columns appear more than once: {', '.join(duplicated)}")
    missing = [c.name for c in contract.columns if c.name not in mapped]
    missing_required = [c.name for c in contract.columns if c.required and c.name not in mapped]
    if missing_required or (missing and len(missing) == len(contract.columns)):
        shown = [layout.columns.get(c, c) for c in (missing_required or missing)]
        raise FileRejected("missing_columns", f"required columns missing ({named}): {', '.join(shown)}")
    return HeaderMatch(layout=layout, columns=[name for name in mapped if name is not None])
