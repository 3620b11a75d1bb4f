"""Pure parsing: bytes in, header mappings and typed rows out. No boto3, no SQL.

The registry of readers (docs/proposals/0001-source-families.md §3): a contract's `reader` and `format` pick one,
and nothing outside this package asks which reader or format a contract has. The loader (elt/pipeline.py), the
upload check (elt/preflight.py, backend/api/uploads.py), `elt validate` and the CLI call `reader_for(contract)`;
`load_contracts` calls `check_contract` on every contract it reads, so a contract naming a reader that does not
exist, or one that cannot read what the contract declares, stops every load with the file and the reason.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from elt.readers.base import Reader
from elt.readers.kh03_reader import Kh03Reader
from elt.readers.table import CsvReader, WorkbookReader

if TYPE_CHECKING:
    from elt.contracts import Contract

READERS: tuple[Reader, ...] = (CsvReader(), WorkbookReader(), Kh03Reader())
_BY_KIND: dict[tuple[str, str], Reader] = {(reader.name, fmt): reader for reader in READERS for fmt in reader.extensions}


def _known() -> str:
    kinds: dict[str, list[str]] = {}
    for name, fmt in _BY_KIND:
        kinds.setdefault(name, []).append(fmt)
    return "; ".join(f"{name} ({', '.join(formats)})" for name, formats in kinds.items())


def reader_for(contract: Contract) -> Reader:
    """The reader of `contract`'s files. ValueError when no reader reads its `reader` and `format` (a contract read
    with load_contracts has been checked already)."""
    reader = _BY_KIND.get((contract.reader, contract.format))
    if reader is None:
        raise ValueError(f"reader {contract.reader!r} does not read format {contract.format!r}; the readers and "
                         f"the formats they read: {_known()}")
    return reader


def check_contract(contract: Contract) -> None:
    """ValueError saying why `contract` cannot be read: no such reader for its format, what it declares is beyond
    its reader (Reader.accepts), or a revision_role whose period is known only after the load."""
    from elt.contracts import REVISION_NEEDS

    reader = reader_for(contract)
    problem = reader.accepts(contract)
    if problem is not None:
        raise ValueError(problem)
    if contract.revision_role is not None and not (contract.period.key_date_pattern or reader.states_period):
        raise ValueError(REVISION_NEEDS)
