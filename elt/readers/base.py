"""What every reader gives the loader, `elt validate` and the API's upload check, so none of them asks which reader
a contract has (issue 15; docs/proposals/0001-source-families.md §3).

A reader turns one file of a drop type into the CSV tables the loader COPYs (`Reader.tables`), says which
reporting period the file's key names (`Reader.period`) or whether the file states its own (`states_period`: a
KH03 workbook's quarter), checks a whole file before an upload is accepted (`Reader.checks`) and says whether it
can read what a contract declares (`Reader.accepts`). The registry (`elt.readers.reader_for`) picks one from the
contract's `reader` and `format`.

Pure, like every reader: a `Source` is the file without saying where it is (the pipeline wraps an S3 object,
`elt validate` and the API wrap bytes); no boto3, no SQL.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from elt.contracts import Contract
    from elt.readers.workbook_guard import WorkbookLimits


@dataclass(frozen=True)
class Period:
    """The reporting period a file is about: named by its key (a Medilink day, a claims month) or stated by its
    content (a KH03 quarter, with the day the publisher issued it when the workbook says)."""

    start: date
    end: date
    label: str  # '2026-11-14', '2024-01', '2020-21 Q2'
    source: Literal["key", "content"]
    published_on: date | None = None

    @property
    def dates(self) -> tuple[date, date]:
        return self.start, self.end


@dataclass(frozen=True)
class Table:
    """One raw table's worth of a file, as CSV (header first). `chunks` is a callable because the loader may read a
    table twice (as UTF-8, then as Windows-1252)."""

    contract: Contract  # the contract of this table (Contract.table_contracts())
    chunks: Callable[[], Iterator[bytes]]
    name: str = "main"  # what the table holds, for messages (a KH03 sheet's table: trust_sector, specialty ...)


@dataclass(frozen=True)
class ReadFile:
    """A file read by its reader: its tables, the period its content states, and, when the tables are not the file's
    own bytes (a workbook turned into CSV), the file's sha256 and how it was read (`encoding`). None: the loader
    hashes and decodes the one table's stream itself (a CSV)."""

    tables: list[Table]
    period: Period | None = None
    sha256: str | None = None
    encoding: str | None = None

    def __post_init__(self) -> None:
        if not self.tables:
            raise ValueError("a file is read as one table or more")
        if len(self.tables) > 1 and self.sha256 is None:
            raise ValueError("a file read as several tables needs the sha256 of its own bytes")


class Source(Protocol):
    """One file, wherever it is: `name` is what messages call it (its base name, or the path given to `elt
    validate`), `size` its bytes."""

    name: str
    size: int

    def stream(self) -> Iterator[bytes]: ...

    def read(self) -> bytes: ...


@dataclass(frozen=True)
class BytesSource:
    """A file held in memory: an upload, or a local file `elt validate` read."""

    name: str
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)

    def stream(self) -> Iterator[bytes]:
        return iter([self.data])

    def read(self) -> bytes:
        return self.data


class Reader(Protocol):
    """A kind of file a contract may declare (`reader` with `format`)."""

    name: str  # the contract's `reader` value
    extensions: tuple[str, ...]  # the contract formats it reads, and so the extensions an upload may end in
    states_period: bool  # the file states its period (KH03); else its key names it, or the day it lands
    noun: str  # what a file of this kind is called in messages: 'file', 'workbook'

    def accepts(self, contract: Contract) -> str | None:
        """Why this reader cannot read what `contract` declares (e.g. extra tables for a one-table reader); None."""

    def period(self, contract: Contract, path: str, *, within: str = "key") -> Period | None:
        """The period `path` (a key below the landing prefix, or a local file's path: `within` says which, for the
        message) names; None when it names none. FileRejected('bad_period') for a date that does not exist."""

    def tables(self, contract: Contract, source: Source, *, limits: WorkbookLimits) -> ReadFile:
        """The file as its raw tables, after the whole-file checks the reader makes; FileRejected naming the rule."""

    def checks(self, contract: Contract, data: bytes, *, name: str, limits: WorkbookLimits) -> Period | None:
        """The whole-file rules an upload must pass before it is stored (the API's 422); the period the content
        states, if it states one. FileRejected naming the rule."""
