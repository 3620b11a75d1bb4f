"""Composition only: list -> read -> validate -> load -> archive, for one file at a time.

Every Airflow task and every `elt` command goes through these functions, so a run from the UI, from the
CLI and from a test behave the same. One file is one transaction: the ledger row's final state and the
file's rows commit together, and the object is moved (archive or quarantine) only after that commit.

Exactly once, whatever runs beside: only the attempt that finds the file's ledger row undecided under its
row lock loads it; any other attempt (a retry beside a zombie, `elt ingest` beside the DAG) finds the
decision and only makes sure the object is where the ledger says. See docs/decisions/0013.
"""

from __future__ import annotations

import json
import logging
import posixpath
import re
import time
from collections.abc import Callable, Collection, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime

import psycopg

from elt.config import Settings, get_settings
from elt.contracts import Contract, load_contracts
from elt.readers import reader_for
from elt.readers.base import ReadFile
from elt.readers.workbook_guard import WorkbookLimits
from elt.runs import blames_the_file, describe_failure, is_transient
from elt.storage.s3 import ObjectChanged, ObjectStore, StoredObject
from elt.warehouse import ledger
from elt.warehouse.loader import FileRejected, LoadResult, copy_file, discard_rows, write_rejects
from elt.warehouse.roles import login_passwords
from elt.warehouse.schema import ensure_warehouse

log = logging.getLogger(__name__)

# S3 copies to the archive run here while the load runs (boto3 clients are safe to share between threads).
_ARCHIVER = ThreadPoolExecutor(max_workers=4, thread_name_prefix="elt-archive")
# Names that uploaders use while a file is still being written; never picked up.
IN_PROGRESS = re.compile(r"(\.tmp|\.part|\.partial|_COPYING_|\.crdownload)$|(^|/)[._][^/]*$")


@dataclass
class FileOutcome:
    key: str
    drop_type: str
    status: str
    file_id: int | None = None
    rows_read: int | None = None
    rows_loaded: int | None = None
    rows_rejected: int | None = None
    error: str | None = None
    moved_to: str | None = None
    dry_run: bool = False
    encoding: str | None = None  # UTF8 or WIN1252, as the file was read
    timings: dict[str, float] = field(default_factory=dict)  # seconds per phase: copy, validate, commit, move
    # Another attempt (earlier, or running beside this one) had decided the file: this one loaded nothing and
    # only made sure the object is where the ledger says. `status` is that decision.
    decided_earlier: bool = False

    @contextmanager
    def timed(self, phase: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[phase] = round(self.timings.get(phase, 0.0) + time.perf_counter() - start, 3)

    def as_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        counts = f"read={self.rows_read} loaded={self.rows_loaded} rejected={self.rows_rejected}"
        tail = f" error={self.error}" if self.error else ""
        if self.decided_earlier:
            return f"{self.key}: already {self.status} as file {self.file_id} by another attempt; nothing loaded{tail}"
        return f"{self.key}: {self.status} (file_id={self.file_id}, {counts}){tail}"


def connect(settings: Settings) -> psycopg.Connection:
    """Autocommit connection: every unit of work opens its own explicit transaction."""
    return psycopg.connect(settings.database_url, autocommit=True, application_name="elt")


def contracts_for(settings: Settings, *, source_system: str | None = None, drop_type: str | None = None,
                  drop_types: Collection[str] | None = None) -> dict[str, Contract]:
    """The contracts, narrowed to one drop type, to a source family's `drop_types` (elt/families), or to a
    `source_system`."""
    contracts = load_contracts(settings.contracts_dir)
    if drop_type and drop_type not in contracts:
        raise ValueError(f"unknown drop type {drop_type!r}; known: {', '.join(sorted(contracts))}")
    if drop_type and drop_types is not None and drop_type not in drop_types:
        raise ValueError(f"drop type {drop_type!r} is not one of this family's: {', '.join(drop_types)}")
    return {
        name: c for name, c in contracts.items()
        if (drop_type is None or name == drop_type) and (source_system is None or c.source_system == source_system)
        and (drop_types is None or name in drop_types)
    }


def prepare(settings: Settings | None = None, *, force: bool = False) -> None:
    """Create the ops schema and raw tables for every contract, the roles and the logins (idempotent; the DDL only
    when the contracts or the schema code changed, or `force`: elt.warehouse.schema.ensure_warehouse)."""
    settings = settings or get_settings()
    with connect(settings) as conn:
        ensure_warehouse(conn, load_contracts(settings.contracts_dir), login_passwords(settings), force=force)


def discover_new_files(source_system: str | None = None, *, drop_type: str | None = None,
                       drop_types: Collection[str] | None = None, settings: Settings | None = None) -> list[str]:
    """Keys waiting in the landing prefixes of the chosen contracts (contracts_for), oldest name first."""
    settings = settings or get_settings()
    contracts = contracts_for(settings, source_system=source_system, drop_type=drop_type, drop_types=drop_types)
    store = ObjectStore(settings)
    keys: list[str] = []
    for prefix in sorted({c.landing.prefix for c in contracts.values()}):
        for obj in store.list(prefix):
            relative = obj.key[len(prefix):]
            if "/" in relative.rstrip("/") and relative.split("/", 1)[0] in {"archive", "quarantine"}:
                continue
            if IN_PROGRESS.search(obj.key) or obj.key.endswith("/"):
                continue
            if any(c.matches(obj.key) for c in contracts.values()):
                keys.append(obj.key)
            elif drop_type is None:
                log.warning("%s matches no drop contract under %s; left where it is", obj.key, prefix)
    log.info("found %d file(s) waiting under %s", len(keys), ", ".join(sorted({c.landing.prefix for c in contracts.values()})))
    return sorted(keys)


def register_landed(key: str, *, settings: Settings | None = None) -> int:
    """The ledger row (file id) of the object now at `key`, registered as 'discovered' if new: what an upload
    through the API answers with. The load later finds the same row (same key and ETag)."""
    settings = settings or get_settings()
    contract = _contract_for_key(contracts_for(settings), key)
    obj = ObjectStore(settings).head(key)
    if obj is None:
        raise FileNotFoundError(f"no object at {key}")
    try:
        period = reporting_period(contract, obj)
    except FileRejected:
        period = (None, None)  # the load quarantines it, saying why
    with connect(settings) as conn:
        return ledger.register(conn, obj, contract, period).file_id


def _contract_for_key(contracts: dict[str, Contract], key: str) -> Contract:
    matching = [c for c in contracts.values() if c.matches(key)]
    if len(matching) != 1:
        names = ", ".join(c.drop_type for c in matching) or "none"
        raise ValueError(f"{key} must match exactly one drop contract (matches: {names})")
    return matching[0]


def reporting_period(contract: Contract, obj: StoredObject) -> tuple[date | None, date | None]:
    """The period a file reports on: a day or a month named in its key, else the day it landed (UTC). None for a
    reader that establishes the period from the file's contents (KH03): the load sets it, and a file refused
    before that has none, rather than a landing day it does not report on."""
    reader = reader_for(contract)
    named = reader.period(contract, obj.key[len(contract.landing.prefix):])  # FileRejected: bad_period
    if named is not None:
        return named.dates
    if reader.states_period:
        return None, None
    day = obj.last_modified.astimezone(UTC).date()
    return day, day


# --- Test seam: the named steps of one file's journey ------------------------------------------------------
# A load calls `_step(step, key)` as it passes each step below. It does nothing unless `step_hook` is set,
# which only tests do: they hold two real concurrent loads of one file at a barrier at a step
# (tests/elt/test_concurrent_loads.py), or kill a loader process there (tests/elt/test_fault_matrix.py).
STEPS = (
    "registered",  # the file's ledger row exists (committed); nothing locked or planned yet
    "locked",      # inside the load transaction: the row is locked and undecided, so this attempt loads it
    "copying",     # inside a COPY: every byte of it sent, the COPY not yet ended (once per COPY: per raw
                   # table written, and again when a file is read a second time, as Windows-1252)
    "copied",      # rows, rejects and the ledger's final state written; not yet committed
    "committed",   # the decision committed; the object is still in landing
    "archived",    # the object's copy is in place in archive/ (or quarantine/); the landed object is still there
    "moved",       # the landed object is deleted; the ledger's timings are not yet written
)
step_hook: Callable[[str, str], None] | None = None


def _step(step: str, key: str) -> None:
    if step_hook is not None:
        step_hook(step, key)


def _copying(key: str, chunks: Iterator[bytes]) -> Iterator[bytes]:
    """The chunks of one COPY, passing the 'copying' step once all are sent and before the COPY ends."""
    yield from chunks
    _step("copying", key)


# --- Where the object goes ---------------------------------------------------------------------------------


def _target_key(store: ObjectStore, template: str, contract: Contract, key: str, file_id: int) -> str:
    folder = template.format(date=datetime.now(UTC))
    relative = key[len(contract.landing.prefix):]
    target = folder + relative
    if store.exists(target):
        directory, name = posixpath.split(relative)
        target = folder + posixpath.join(directory, f"{file_id}-{name}")
    return target


def _root(template: str) -> str:
    return template.split("{", 1)[0]


def _plan_target(conn: psycopg.Connection, store: ObjectStore, contract: Contract, obj: StoredObject, file_id: int,
                 recorded: str | None, template: str) -> tuple[str, str]:
    """The key the object goes to under the archive or quarantine `template`, decided once per file in the ledger
    (ledger.claim_target: every attempt, concurrent or later, uses the same key), and the file's status."""
    root = _root(template)
    proposed = recorded if recorded and recorded.startswith(root) else _target_key(
        store, template, contract, obj.key, file_id)
    return ledger.claim_target(conn, file_id, root, proposed)


def _holds(store: ObjectStore, obj: StoredObject) -> bool:
    """True while the landed key still holds the version that was decided on (not deleted, not uploaded again)."""
    current = store.head(obj.key)
    return current is not None and current.etag == obj.etag


def _archive(store: ObjectStore, obj: StoredObject, target: str, *, verified: bool | None) -> str | None:
    """Make sure this object version is at `target` in archive/, then delete it from landing. A copy found at
    `target` is this version (only copies of it go there: the key is the file's own, claimed in the ledger), unless
    this attempt's early copy could not be `verified` (failed, or the store may have copied a later upload): then
    it is copied again. Returns the target, or None when the landed key no longer holds the version and no copy
    of it is at the target."""
    if not _holds(store, obj):
        if store.exists(target):
            return target  # another attempt archived it already
        log.warning("%s changed before it could be archived; the new version stays for the next run", obj.key)
        return None
    if verified is False or not store.exists(target):
        store.copy(obj.key, target, if_match=obj.etag)
    _step("archived", obj.key)
    store.delete(obj.key)
    _step("moved", obj.key)
    return target


def _quarantine(store: ObjectStore, contract: Contract, outcome: FileOutcome, rule: str | None, obj: StoredObject,
                target: str) -> str | None:
    """Move the object version to `target` in quarantine/, with the `.error.json` sidecar that says why."""
    if not _holds(store, obj):
        if store.exists(target):
            return target
        log.warning("%s changed before it could be quarantined; the new version stays for the next run", obj.key)
        return None
    sidecar = {
        "file_id": outcome.file_id, "drop_type": contract.drop_type, "contract_version": contract.version,
        "original_key": outcome.key, "status": outcome.status, "rule": rule, "reason": outcome.error,
        "rows_read": outcome.rows_read, "rows_rejected": outcome.rows_rejected,
        "quarantined_at": datetime.now(UTC).isoformat(),
        "next_step": "fix the file and upload it again under the landing prefix; "
                     f"see `elt rejects {outcome.file_id}` for row-level reasons",
    }
    store.put(target + ".error.json", json.dumps(sidecar, indent=2).encode(), content_type="application/json")
    store.copy(obj.key, target, if_match=obj.etag)
    _step("archived", obj.key)
    store.delete(obj.key)
    _step("moved", obj.key)
    return target


@dataclass
class _EarlyArchive:
    """The archive copy, made while the file loads, so that S3's copy costs the load no time: CopyObject is a
    server-side copy in S3 and runs beside the COPY into Postgres. `wait()` waits for it.

    Nothing here deletes the copy: another attempt of the same file may have committed a load that relies on
    it. Whether an unneeded copy goes is decided under the ledger's row lock (`_discard_copy`)."""

    store: ObjectStore
    key: str
    etag: str
    target: str
    future: Future | None = None

    def start(self) -> _EarlyArchive:
        self.future = _ARCHIVER.submit(self._run)
        return self

    def _run(self) -> bool:
        # Only this exact version (ETag), never bytes uploaded under the key since. Some S3-compatible stores
        # (moto among them) ignore CopySourceIfMatch, so what the copy wrote is checked as well.
        self.store.copy(self.key, self.target, if_match=self.etag)
        copied = self.store.head(self.target)
        if copied is not None and copied.etag == self.etag:
            return True
        if "-" not in self.etag:
            # A copy of a single-part object keeps its ETag (the MD5 of its bytes): these are other bytes, a later
            # upload, which no attempt may keep as this file's archive.
            self.store.delete(self.target)
            return False
        # A multipart object's copy has an ETag of its own: trusted while the key still holds the version.
        current = self.store.head(self.key)
        return current is not None and current.etag == self.etag

    def wait(self) -> bool:
        """Waits for the copy; True when it put this version at the target."""
        try:
            return self.future.result()
        except Exception as error:  # noqa: BLE001 - the object is copied after the load instead
            log.warning("early archive copy to %s failed (%s); copying after the load instead", self.target, error)
            return False


def _discard_copy(conn: psycopg.Connection, store: ObjectStore, file_id: int, target: str) -> None:
    """Delete the archive copy at `target` unless the ledger says the file is archived there. Decided under the
    file's row lock, so never while another attempt's load that will rely on it is committing: an attempt that
    commits afterwards finds the copy gone and copies again (`_archive`)."""
    try:
        with conn.transaction():
            status, _ = ledger.lock_decided(conn, file_id)
            if status not in ledger.ARCHIVED_STATES:
                store.delete(target)
    except Exception:  # noqa: BLE001 - Postgres or S3 may be what failed; the next attempt reuses the same target
        log.warning("could not remove the unused archive copy %s; the next attempt reuses it", target)


def ingest_file(key: str, *, dry_run: bool = False, settings: Settings | None = None) -> FileOutcome:
    """Load one landed object exactly once. Never raises for a bad file: it is quarantined with the reason.

    Safe beside any other attempt at the same file (a retry beside a zombie, `elt ingest` beside the DAG):
    exactly one loads it, and the others change nothing but make sure the object is where the ledger says."""
    settings = settings or get_settings()
    contract = _contract_for_key(contracts_for(settings), key)
    store = ObjectStore(settings)
    obj = store.head(key)
    if obj is None:
        return FileOutcome(key, contract.drop_type, "missing", error="object no longer exists (moved by another run?)")

    try:
        outcome = _ingest(settings, store, contract, obj, dry_run=dry_run)
    except Exception as exc:
        _note_failure(settings, obj, exc)
        raise
    log.info("%s", outcome.summary())
    return outcome


def _note_failure(settings: Settings, obj: StoredObject, exc: Exception) -> None:
    """Write why a load attempt failed onto its ledger row (which stays 'discovered', to be retried)."""
    kind = "transient, will be retried" if is_transient(exc) else "error"
    message = f"load attempt failed ({kind}): {describe_failure(exc)}"[:500]
    try:
        with connect(settings) as conn:
            conn.execute(
                "update ops.file_ledger set error = %s where bucket = %s and key = %s and etag = %s "
                "and status in ('discovered', 'loading')", (message, obj.bucket, obj.key, obj.etag))
    except psycopg.Error:
        log.warning("could not record the failure of %s in the ledger (database unreachable?)", obj.key)


def _decided_earlier(conn: psycopg.Connection, contract: Contract, obj: StoredObject, file_id: int,
                     status: str) -> FileOutcome:
    """The outcome of an attempt that found the file decided by another: it loads nothing. The decision's reason
    comes along, for the quarantine sidecar if this attempt is the one that moves the object."""
    log.info("%s was already %s as file %d (by an earlier or concurrent attempt); making sure it is where the "
             "ledger says", obj.key, status, file_id)
    error = conn.execute("select error from ops.file_ledger where file_id = %s", (file_id,)).fetchone()[0]
    return FileOutcome(obj.key, contract.drop_type, status, file_id, error=error, decided_earlier=True)


def _ingest(settings: Settings, store: ObjectStore, contract: Contract, obj: StoredObject, *,
            dry_run: bool) -> FileOutcome:
    with connect(settings) as conn:
        try:
            period, refusal = reporting_period(contract, obj), None
        except FileRejected as exc:
            period, refusal = (None, None), exc
        entry = ledger.register(conn, obj, contract, period)
        _step("registered", obj.key)
        recorded, verified, rule = entry.archived_key, None, None
        limits = settings.workbook_limits()
        if entry.status in ledger.FINAL_STATES:
            outcome = _decided_earlier(conn, contract, obj, entry.file_id, entry.status)
        elif refusal is not None:
            outcome, rule = _refuse(conn, contract, obj, entry.file_id, refusal, dry_run=dry_run), refusal.rule
        elif dry_run:
            outcome, rule = _load(conn, store, contract, obj, entry.file_id, dry_run=True, limits=limits)
        else:
            recorded, status = _plan_target(conn, store, contract, obj, entry.file_id, recorded,
                                            contract.landing.archive_prefix)
            if status in ledger.FINAL_STATES:  # decided by a concurrent attempt while this one registered
                outcome = _decided_earlier(conn, contract, obj, entry.file_id, status)
            else:
                outcome, rule, verified = _load_beside_archive_copy(conn, store, contract, obj, entry.file_id, recorded,
                                                                    limits)
        if not dry_run:
            with outcome.timed("move"):
                target = _put_away(conn, store, contract, outcome, rule, obj, recorded, verified)
            if not outcome.decided_earlier:
                ledger.set_archived_key(conn, outcome.file_id, target, outcome.timings)
            outcome.moved_to = target
    return outcome


def _refuse(conn: psycopg.Connection, contract: Contract, obj: StoredObject, file_id: int, refusal: FileRejected,
            *, dry_run: bool) -> FileOutcome:
    """A file refused before it is read (an impossible period in its key): quarantined, unless another attempt
    decided it meanwhile."""
    outcome = FileOutcome(obj.key, contract.drop_type, "quarantined", file_id, error=refusal.message, dry_run=dry_run)
    if not dry_run:
        with conn.transaction():
            decided = ledger.lock_for_load(conn, file_id)
            if decided is not None:
                return _decided_earlier(conn, contract, obj, file_id, decided)
            ledger.finish(conn, file_id, "quarantined", error=refusal.message)
        _step("committed", obj.key)
    return outcome


def _load_beside_archive_copy(conn: psycopg.Connection, store: ObjectStore, contract: Contract, obj: StoredObject,
                              file_id: int, target: str, limits: WorkbookLimits) -> tuple[FileOutcome, str | None, bool]:
    """The load, with the archive copy to `target` made beside it. Returns the outcome, the rule that refused the
    file (if any) and whether the early copy verifiably put this version at the target."""
    early = _EarlyArchive(store, obj.key, obj.etag, target).start()
    try:
        outcome, rule = _load(conn, store, contract, obj, file_id, dry_run=False, limits=limits)
    except BaseException:
        early.wait()
        _discard_copy(conn, store, file_id, target)  # not loaded by this attempt: the copy goes unless another loaded it
        raise
    verified = early.wait()
    if outcome.status not in ledger.FINAL_STATES:  # not decided (changed during the load); quarantine: _put_away
        _discard_copy(conn, store, file_id, target)
    return outcome, rule, verified


def _put_away(conn: psycopg.Connection, store: ObjectStore, contract: Contract, outcome: FileOutcome,
              rule: str | None, obj: StoredObject, recorded: str | None, verified: bool | None) -> str | None:
    """Archive or quarantine the object version that was decided on, at the key the ledger records for it. Returns
    where it is, or None when the key now holds other bytes (uploaded again during the load): those are left for
    the next run. Run by every attempt, the one that loaded and any other: each step is idempotent."""
    if outcome.status not in ledger.FINAL_STATES and outcome.status != FAILED_ON_CONTENT:
        # not decided (changed during the load): stays in landing
        return None
    if outcome.status in ledger.ARCHIVED_STATES:
        if not (recorded and recorded.startswith(_root(contract.landing.archive_prefix))):
            recorded, _ = _plan_target(conn, store, contract, obj, outcome.file_id, recorded,
                                       contract.landing.archive_prefix)
        return _archive(store, obj, recorded, verified=verified)
    if recorded and recorded.startswith(_root(contract.landing.archive_prefix)):
        _discard_copy(conn, store, outcome.file_id, recorded)  # the early archive copy (this or an earlier attempt's)
    target, _ = _plan_target(conn, store, contract, obj, outcome.file_id, recorded, contract.landing.quarantine_prefix)
    return _quarantine(store, contract, outcome, rule, obj, target)


def _load(conn: psycopg.Connection, store: ObjectStore, contract: Contract, obj: StoredObject, file_id: int,
          *, dry_run: bool, limits: WorkbookLimits) -> tuple[FileOutcome, str | None]:
    """The load transaction: the file's rows, rejects and final ledger state commit together, or nothing does.
    Only an attempt that finds the ledger row undecided under its row lock loads; any other returns the decision."""
    key = obj.key
    outcome, rule = FileOutcome(key, contract.drop_type, "loading", file_id, dry_run=dry_run), None
    try:
        with conn.transaction():
            decided = ledger.lock_for_load(conn, file_id)
            if decided is not None:  # another attempt committed it while this one waited: nothing to load
                return _decided_earlier(conn, contract, obj, file_id, decided), None
            _step("locked", key)
            with outcome.timed("copy"):
                result = _copy_object(conn, store, contract, obj, file_id, limits)
            rule = _decide(conn, contract, file_id, result, outcome)
            _step("copied", key)
            if dry_run:
                raise _DryRun
            commit_started = time.perf_counter()
        outcome.timings["commit"] = round(time.perf_counter() - commit_started, 3)
        _step("committed", key)
    except _DryRun:
        pass
    except ObjectChanged as exc:
        # Uploaded again between discovery and the read: nothing of either version is loaded now. This
        # ledger row (the old version, whose bytes are gone) stays 'discovered' with the reason; the new
        # version gets its own row on the next run.
        outcome.status = "changed"
        outcome.error = f"{exc}; the new version loads on the next run"
        if not dry_run:
            ledger.note_error(conn, file_id, outcome.error)
        log.warning("%s", outcome.error)
        return outcome, None
    except FileRejected as exc:
        outcome.status, outcome.error = "quarantined", f"{exc.rule}: {exc.message}"
        if not dry_run:
            with conn.transaction():
                ledger.finish(conn, file_id, "quarantined", rows_read=outcome.rows_read, error=outcome.error)
            _step("committed", key)
        return outcome, exc.rule
    except Exception as exc:
        if not blames_the_file(exc):
            raise  # a connection, the warehouse or S3: the file stays waiting, for a retry or the next run
        return _failed_on_content(conn, contract, obj, outcome, exc, dry_run=dry_run), LOAD_ERROR
    return outcome, rule


# The rule of a file whose load failed on an error the loader did not expect (a reader tripping over its content),
# and the outcome's status then: the ledger says quarantined, the task fails (elt.orchestration.load_file).
LOAD_ERROR = "load_error"
FAILED_ON_CONTENT = "failed"


def _failed_on_content(conn: psycopg.Connection, contract: Contract, obj: StoredObject, outcome: FileOutcome,
                       exc: Exception, *, dry_run: bool) -> FileOutcome:
    """The last line of defence: the file is quarantined like a refused one (so it neither fails every night
    nor blocks the others), its status is `failed` (so the task and the run say so), and the reason is the
    error's class and place, never its message, which may quote the file. Unless another attempt decided the
    file meanwhile."""
    outcome.status = FAILED_ON_CONTENT
    outcome.error = (f"{LOAD_ERROR}: the load failed on an error it did not expect ({describe_failure(exc)}); the "
                     "file is quarantined so that it does not hold up the others: once the cause is fixed, put it "
                     "back under the landing prefix")
    log.error("%s: %s", outcome.key, outcome.error)
    if not dry_run:
        with conn.transaction():
            decided = ledger.lock_for_load(conn, outcome.file_id)
            if decided is not None:
                return _decided_earlier(conn, contract, obj, outcome.file_id, decided)
            ledger.finish(conn, outcome.file_id, "quarantined", rows_read=outcome.rows_read, error=outcome.error)
        _step("committed", obj.key)
    return outcome


def _decide(conn: psycopg.Connection, contract: Contract, file_id: int, result: LoadResult,
            outcome: FileOutcome) -> str | None:
    """With the file's rows copied: duplicate, rejected (too many bad rows), loaded or superseded, written to the
    ledger in the load's transaction. Returns the rule when the file is refused."""
    outcome.rows_read, outcome.encoding = result.rows_read, result.encoding
    if result.period is not None:
        ledger.set_period(conn, file_id, result.period, result.published_on)
    counts = {"sha256": result.sha256, "encoding": result.encoding, "layout": result.layout,
              "rows_read": result.rows_read}
    twin = ledger.loaded_twin(conn, contract.drop_type, result.sha256, file_id)
    if twin is not None:
        discard_rows(conn, contract, file_id)
        outcome.status, outcome.error = "duplicate", f"same bytes as file {twin}, already loaded"
        outcome.rows_loaded = 0
        ledger.finish(conn, file_id, "duplicate", rows_loaded=0, error=outcome.error, duplicate_of=twin, **counts)
        return None
    with outcome.timed("validate"):
        for table_contract in contract.table_contracts():
            write_rejects(conn, table_contract, file_id, result)
    share = result.rows_rejected / result.rows_read
    outcome.rows_rejected = result.rows_rejected
    if share > contract.max_reject_share:
        discard_rows(conn, contract, file_id)
        outcome.status, outcome.rows_loaded = "rejected", 0
        outcome.error = (
            f"{result.rows_rejected} of {result.rows_read} rows ({share:.0%}) break the contract, more "
            f"than the {contract.max_reject_share:.0%} allowed; by rule: {result.rejects_by_rule}"
        )
        ledger.finish(conn, file_id, "rejected", rows_loaded=0, rows_rejected=result.rows_rejected,
                      error=outcome.error, **counts)
        return "reject_share"
    outcome.status, outcome.rows_loaded = "loaded", result.rows_loaded
    if contract.period.supersede:
        _supersede(conn, file_id, outcome)
    ledger.finish(conn, file_id, outcome.status, rows_loaded=result.rows_loaded,
                  rows_rejected=result.rows_rejected, error=outcome.error, **counts)
    return None


def _supersede(conn: psycopg.Connection, file_id: int, outcome: FileOutcome) -> None:
    """One current file per drop type and period: the later one (by publication when both files say, else by
    arrival), whichever of them commits last. Decided under the period's lock (ledger.later_loaded)."""
    later = ledger.later_loaded(conn, file_id)
    if later is None:
        ledger.supersede_older(conn, file_id)
        return
    # An older edition of a period whose later file is loaded already: kept (its rows stay in raw, for
    # history) but not current.
    newer, basis = later
    outcome.status = "superseded"
    outcome.error = (f"{'published' if basis == 'publication' else 'arrived'} before file {newer}, which is loaded "
                     "for the same period and stays current")
    ledger.superseded_on_arrival(conn, file_id, newer)


@dataclass(frozen=True)
class _StoredSource:
    """The object version the ledger row names, as its reader sees a file: only those bytes (its ETag), else
    ObjectChanged."""

    store: ObjectStore
    obj: StoredObject

    @property
    def name(self) -> str:
        return posixpath.basename(self.obj.key)

    @property
    def size(self) -> int:
        return self.obj.size

    def stream(self) -> Iterator[bytes]:
        return self.store.iter_bytes(self.obj.key, if_match=self.obj.etag)

    def read(self) -> bytes:
        return self.store.read(self.obj.key, if_match=self.obj.etag)


def _copy_object(conn: psycopg.Connection, store: ObjectStore, contract: Contract, obj: StoredObject, file_id: int,
                 limits: WorkbookLimits) -> LoadResult:
    """COPY one object version into its raw tables, as its reader reads it (elt/readers): a CSV streams from S3 as
    it is; a workbook is read whole once its size is within `limits` (which its reader then holds it to), and its
    sha256 is the workbook's own, so the same workbook landing again is still recognised as a duplicate. A file
    whose content states its period (a KH03 quarter) sets the ledger's period to it."""
    read: ReadFile = reader_for(contract).tables(contract, _StoredSource(store, obj), limits=limits)
    results = [copy_file(conn, table.contract, file_id, lambda table=table: _copying(obj.key, table.chunks()))
               for table in read.tables]
    period = read.period
    return LoadResult(sha256=read.sha256 or results[0].sha256, encoding=read.encoding or results[0].encoding,
                      layout=results[0].layout, rows_read=sum(result.rows_read for result in results),
                      period=period.dates if period else None, published_on=period.published_on if period else None)


class _DryRun(Exception):
    """Raised inside the load transaction to roll everything back after a dry run."""
