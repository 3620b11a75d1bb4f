"""What the source kinds share: a local file put into the landing bucket and ingested like any drop.

A source never loads rows itself. It writes (or finds) a file of its drop type, puts it under that contract's
landing prefix and calls `elt.pipeline.ingest_file`, the function the ingest DAG and `elt ingest` use: the ledger
then gives exactly-once for the file, bad rows go to `ops.load_rejects` and a bad file to quarantine, as for a file
dropped by hand. See docs/decisions/0032.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from elt.config import Settings
from elt.connectors.base import ConnectorError
from elt.contracts import Contract
from elt.pipeline import FileOutcome, contracts_for, ingest_file
from elt.storage.s3 import ObjectStore
from elt.warehouse.ledger import ARCHIVED_STATES

# Outcomes after which what the file holds is in the warehouse (or already was): the pull may move on.
LANDED = ARCHIVED_STATES
CHUNK_BYTES = 1024 * 1024


def contract_for(settings: Settings, drop_type: str | None, connector: str) -> Contract:
    """The contract a pull's files follow; ConnectorError when the declaration names none or an unknown one."""
    if not drop_type:
        raise ConnectorError(f"connector {connector}: a pull needs a drop_type (the contract its files follow)")
    try:
        return contracts_for(settings, drop_type=drop_type)[drop_type]
    except ValueError as exc:
        raise ConnectorError(f"connector {connector}: {exc}") from None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def land_and_ingest(settings: Settings, path: Path, key: str) -> FileOutcome:
    """Upload the local file at `path` to `key` in the landing bucket (one PUT or a multipart upload: a reader
    never sees part of it) and ingest it through the ledger. The same bytes at the same key have the same ETag, so
    landing a file again that the ledger has decided loads nothing (the ledger row is found, not made)."""
    store = ObjectStore(settings)
    store.client.upload_file(str(path), store.bucket, key)
    return ingest_file(key, settings=settings)


def combined_sha256(digests: list[str]) -> str:
    """One checksum for a pull of several files: the SHA-256 of their SHA-256s, in the order landed."""
    return hashlib.sha256("\n".join(digests).encode()).hexdigest()
