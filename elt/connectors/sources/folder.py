"""A local or mounted folder (NFS) of drops, taken in exactly as the landing bucket's prefixes are.

The folder mirrors the bucket: a file at `<path>/medical_records/input/patients_2026-11-20.csv` is the drop the
contracts know as key `medical_records/input/patients_2026-11-20.csv`. Each settled file (not changed for
`settle_seconds`, and not named like a file still being written) is put at that key in the landing bucket and
ingested through the ledger like any drop (elt/connectors/landing.py); then the local file goes where the bucket's
object went, `archive/...` or `quarantine/...` under the folder (the reason beside it, `.error.json`). A file found
again (its move failed, or someone put it back) lands the same bytes at the same key: the ledger has decided it,
and nothing is loaded twice. See docs/decisions/0032.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from elt.config import Settings, get_settings
from elt.connectors.base import ConnectorError, Pulled, RunContext
from elt.connectors.landing import combined_sha256, land_and_ingest, sha256_of
from elt.contracts import Contract
from elt.pipeline import IN_PROGRESS, FileOutcome, contracts_for
from elt.storage.s3 import ObjectStore
from elt.warehouse.ledger import ARCHIVED_STATES

log = logging.getLogger(__name__)

# Folders below a landing prefix that hold files already decided, as in the bucket (elt.pipeline.discover_new_files).
DECIDED_FOLDERS = frozenset({"archive", "quarantine"})


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["folder"]
    path: Path = Field(description="The folder; below it, the landing bucket's key layout (medical_records/input/...).")
    settle_seconds: float = Field(30.0, ge=0, description="A file changed more recently than this is still being "
                                                          "written and waits for the next pull.")


def open(options: Options, settings: Settings | None = None) -> FolderSource:  # noqa: A001 - the kind contract
    return FolderSource(options, settings or get_settings())


@dataclass
class FolderSource:
    options: Options
    settings: Settings

    def pull(self, ctx: RunContext, cursor: str | None) -> Pulled:
        """Ingest every settled file of the connector's drop type (every drop type when it names none)."""
        if not self.options.path.is_dir():
            raise ConnectorError(f"connector {ctx.connector}: {self.options.path} is not a folder (not mounted?)")
        try:
            contracts = contracts_for(self.settings, drop_type=ctx.drop_type)
        except ValueError as exc:
            raise ConnectorError(f"connector {ctx.connector}: {exc}") from None
        keys, digests, rows, size = [], [], 0, 0
        for key, path in self._settled(contracts):
            if ctx.dry_run:
                keys.append(key)
                continue
            digest, file_size = sha256_of(path), path.stat().st_size
            outcome = land_and_ingest(self.settings, path, key)
            self._put_away(path, outcome)
            if outcome.status not in ARCHIVED_STATES:
                log.warning("%s: %s was %s: %s", ctx.connector, key, outcome.status, outcome.error)
            keys.append(key)
            digests.append(digest)
            rows += outcome.rows_loaded or 0
            size += file_size
        return Pulled(tuple(keys), rows, size, combined_sha256(digests), cursor)

    def _settled(self, contracts: dict[str, Contract]) -> list[tuple[str, Path]]:
        """(key, path) of the files waiting under the contracts' prefixes that no writer touched for the settle
        time, oldest name first."""
        root, now = self.options.path, time.time()
        found = []
        for prefix in sorted({contract.landing.prefix for contract in contracts.values()}):
            for path in sorted((root / prefix).rglob("*")):
                key = path.relative_to(root).as_posix()
                if not path.is_file() or _decided_or_partial(key, prefix):
                    continue
                if path.is_symlink():
                    log.warning("%s is a symbolic link, which a drop folder does not take; left where it is", key)
                elif not any(contract.matches(key) for contract in contracts.values()):
                    log.warning("%s matches no drop contract under %s; left where it is", key, prefix)
                elif now - path.stat().st_mtime < self.options.settle_seconds:
                    log.info("%s changed less than %s s ago: still being written, left for the next pull", key,
                             self.options.settle_seconds)
                else:
                    found.append((key, path))
        return found

    def _put_away(self, path: Path, outcome: FileOutcome) -> None:
        """Move the local file where its object went in the bucket: archive/, or quarantine/ with the reason."""
        if outcome.moved_to is None:
            log.warning("%s was not decided (%s); it stays for the next pull", outcome.key, outcome.status)
            return
        target = self.options.path / outcome.moved_to
        target.parent.mkdir(parents=True, exist_ok=True)
        if outcome.status not in ARCHIVED_STATES:
            sidecar = ObjectStore(self.settings).read(outcome.moved_to + ".error.json")
            target.with_name(target.name + ".error.json").write_bytes(sidecar)
        os.replace(path, target)


def _decided_or_partial(key: str, prefix: str) -> bool:
    relative = key[len(prefix):]
    return ("/" in relative and relative.split("/", 1)[0] in DECIDED_FOLDERS) or IN_PROGRESS.search(key) is not None
