"""Composition only: list -> read -> validate -> load -> archive, for one file at a time.

Every Airflow task and every `elt` command goes through these functions, so a run from the UI, from the
CLI and from a test behave the same. One file is one transaction: the ledger row's final state and the
file's rows commit together, and the object is moved (archive or quarantine) only after that commit.
"""

from __future__ import annotations

import hashlib
import json
import logging
import posixpath
import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta

import psycopg

from elt.config import Settings, get_settings
from elt.contracts import Contract, load_contracts
from elt.readers.kh03 import read_kh03, to_csv_tables
from elt.readers.spreadsheet import spreadsheet_to_csv
from elt.runs import is_transient
from elt.storage.s3 import ObjectChanged, ObjectStore, StoredObject
from elt.warehouse import ledger
from elt.warehouse.loader import FileRejected, LoadResult, copy_file, discard_rows, pg_message, write_rejects
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
        return f"{self.key}: {self.status} (file_id={self.file_id}, {counts}){tail}"


def connect(settings: Settings) -> psycopg.Connection:
    """Autocommit connection: every unit of work opens its own explicit transaction."""
    return psycopg.connect(settings.database_url, autocommit=True, application_name="elt")


def contracts_for(settings: Settings, *, source_system: str | None = None, drop_type: str | None = None) -> dict[str, Contract]:
    contracts = load_contracts(settings.contracts_dir)
    if drop_type and drop_type not in contracts:
        raise ValueError(f"unknown drop type {drop_type!r}; known: {', '.join(sorted(contracts))}")
    return {
        name: c for name, c in contracts.items()
        if (drop_type is None or name == drop_type) and (source_system is None or c.source_system == source_system)
    }


def prepare(settings: Settings | None = None) -> None:
    """Create the ops schema and raw tables for every contract (idempotent)."""
    settings = settings or get_settings()
    with connect(settings) as conn:
        ensure_warehouse(conn, load_contracts(settings.contracts_dir))


def discover_new_files(source_system: str | None = None, *, drop_type: str | None = None,
                       settings: Settings | None = None) -> list[str]:
    """Keys waiting in the landing prefixes of the chosen contracts, oldest name first."""
    settings = settings or get_settings()
    contracts = contracts_for(settings, source_system=source_system, drop_type=drop_type)
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
    if contract.reader == "kh03":
        return None, None
    pattern = contract.period.key_date_pattern
    if pattern:
        match = re.search(pattern, obj.key[len(contract.landing.prefix):])
        if match:
            named = match.groupdict()
            try:
                if named.get("year") and named.get("month"):
                    year, month = int(named["year"]), int(named["month"])
                    start = date(year, month, 1)
                    end = date(year + month // 12, month % 12 + 1, 1) - timedelta(days=1)
                    return start, end
                day = date.fromisoformat(match.group(1))
            except ValueError as exc:
                raise FileRejected("bad_period", f"the period {match.group(0)!r} in the key is not a real date") from exc
            return day, day
    day = obj.last_modified.astimezone(UTC).date()
    return day, day


# --- Test seam: the named steps of one file's journey ------------------------------------------------------
# A load calls `_step(step, key)` as it passes each step below. It does nothing unless `step_hook` is set,
# which only tests do: they hold two real concurrent loads of one file at a barrier at a step
# (tests/elt/test_concurrent_loads.py), or kill a loader process there (tests/elt/test_fault_matrix.py).
STEPS = (
    "registered",  # the file's ledger row exists (committed); nothing locked or planned yet
    "locked",      # inside the load transaction: the row is locked and undecided, so this attempt loads it
    "copying",     # inside a COPY: every byte of it sent, the COPY not yet ended (once per raw table written)
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


def _target_key(store: ObjectStore, template: str, contract: Contract, key: str, file_id: int) -> str:
    folder = template.format(date=datetime.now(UTC))
    relative = key[len(contract.landing.prefix):]
    target = folder + relative
    if store.exists(target):
        directory, name = posixpath.split(relative)
        target = folder + posixpath.join(directory, f"{file_id}-{name}")
    return target


def _is_archive_key(contract: Contract, key: str | None) -> bool:
    return bool(key) and key.startswith(contract.landing.archive_prefix.split("{", 1)[0])


def _move(store: ObjectStore, contract: Contract, outcome: FileOutcome, rule: str | None, obj: StoredObject,
          planned: str | None = None) -> str | None:
    """Archive or quarantine the object version that was decided on. Returns where it went, or None when the
    key now holds other bytes (re-uploaded during the load): those are left for the next run."""
    current = store.head(outcome.key)
    if current is None or current.etag != obj.etag:
        log.warning("%s changed while it was being loaded; the new version stays for the next run", outcome.key)
        return None
    if outcome.status in {"loaded", "duplicate", "superseded"}:
        target = planned if _is_archive_key(contract, planned) else _target_key(
            store, contract.landing.archive_prefix, contract, outcome.key, outcome.file_id)
        store.copy(outcome.key, target, if_match=obj.etag)
        _step("archived", outcome.key)
        store.delete(outcome.key)
        _step("moved", outcome.key)
    else:
        target = _target_key(store, contract.landing.quarantine_prefix, contract, outcome.key, outcome.file_id)
        sidecar = {
            "file_id": outcome.file_id, "drop_type": contract.drop_type, "contract_version": contract.version,
            "original_key": outcome.key, "status": outcome.status, "rule": rule, "reason": outcome.error,
            "rows_read": outcome.rows_read, "rows_rejected": outcome.rows_rejected,
            "quarantined_at": datetime.now(UTC).isoformat(),
            "next_step": "fix the file and upload it again under the landing prefix; "
                         f"see `elt rejects {outcome.file_id}` for row-level reasons",
        }
        store.put(target + ".error.json", json.dumps(sidecar, indent=2).encode(), content_type="application/json")
        store.copy(outcome.key, target, if_match=obj.etag)
        _step("archived", outcome.key)
        store.delete(outcome.key)
        _step("moved", outcome.key)
    return target


@dataclass
class _EarlyArchive:
    """The archive copy, made while the file loads, so that S3's copy costs the load no time: CopyObject is a
    server-side copy in S3 and runs beside the COPY into Postgres. `finished()` waits for it; an object that
    is not loaded after all has the copy deleted again (`_finish_move`)."""

    store: ObjectStore
    key: str
    etag: str
    target: str
    future: Future | None = None

    def start(self) -> _EarlyArchive:
        self.future = _ARCHIVER.submit(self._run)
        return self

    def _run(self) -> bool:
        # Only this exact version (ETag), never bytes uploaded under the key since. Some S3-compatible
        # stores ignore CopySourceIfMatch, so the version is checked again after the copy as well.
        self.store.copy(self.key, self.target, if_match=self.etag)
        current = self.store.head(self.key)
        if current is None or current.etag != self.etag:
            self.store.delete(self.target)
            raise RuntimeError(f"{self.key} was replaced during the copy")
        return True

    def finished(self) -> bool:
        """Waits for the copy; True when the archive copy exists."""
        try:
            return self.future.result()
        except Exception as error:  # noqa: BLE001 - the object is moved after the load instead
            log.warning("early archive copy to %s failed (%s); moving after the load instead", self.target, error)
            return False


def _start_archive(conn: psycopg.Connection, store: ObjectStore, contract: Contract, obj: StoredObject,
                   entry: ledger.LedgerEntry) -> _EarlyArchive:
    # The target is recorded (and committed) first, so a re-run after a crash reuses it instead of
    # leaving a second copy.
    target = entry.archived_key if _is_archive_key(contract, entry.archived_key) else _target_key(
        store, contract.landing.archive_prefix, contract, obj.key, entry.file_id)
    ledger.set_archived_key(conn, entry.file_id, target)
    return _EarlyArchive(store, obj.key, obj.etag, target).start()


def _forget_archive_copy(store: ObjectStore, target: str) -> None:
    try:
        store.delete(target)
    except Exception:  # noqa: BLE001 - S3 may be what failed; the re-run reuses the same target anyway
        log.warning("could not delete the early archive copy %s; the next run reuses it", target)


def _finish_move(store: ObjectStore, contract: Contract, outcome: FileOutcome, rule: str | None,
                 obj: StoredObject, early: _EarlyArchive | None, planned: str | None) -> str | None:
    if early is not None:
        copied = early.finished()
        if copied and outcome.status in {"loaded", "duplicate", "superseded"}:
            current = store.head(outcome.key)
            if current is not None and current.etag == obj.etag:
                _step("archived", outcome.key)
                store.delete(outcome.key)
                _step("moved", outcome.key)
            return early.target
        if copied:  # not loaded after all: the archive copy goes, the object is quarantined below
            store.delete(early.target)
        planned = None
    return _move(store, contract, outcome, rule, obj, planned)


def ingest_file(key: str, *, dry_run: bool = False, settings: Settings | None = None) -> FileOutcome:
    """Load one landed object exactly once. Never raises for a bad file: it is quarantined with the reason."""
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
    message = f"load attempt failed ({kind}): {type(exc).__name__}: {pg_message(exc)}"[:500]
    try:
        with connect(settings) as conn:
            conn.execute(
                "update ops.file_ledger set error = %s where bucket = %s and key = %s and etag = %s "
                "and status in ('discovered', 'loading')", (message, obj.bucket, obj.key, obj.etag))
    except psycopg.Error:
        log.warning("could not record the failure of %s in the ledger (database unreachable?)", obj.key)


def _ingest(settings: Settings, store: ObjectStore, contract: Contract, obj: StoredObject, *,
            dry_run: bool) -> FileOutcome:
    key = obj.key
    with connect(settings) as conn:
        rule, early, planned = None, None, None
        try:
            period = reporting_period(contract, obj)
        except FileRejected as exc:
            period, rule = (None, None), exc.rule
            entry = ledger.register(conn, obj, contract, period)
            outcome = FileOutcome(key, contract.drop_type, "quarantined", entry.file_id, error=exc.message)
            with conn.transaction():
                ledger.finish(conn, entry.file_id, "quarantined", error=exc.message)
        else:
            entry = ledger.register(conn, obj, contract, period)
            _step("registered", key)
            planned = entry.archived_key
            if entry.status in ledger.FINAL_STATES:
                # Already decided in an earlier run that died before moving the object: finish the move only.
                log.info("%s was already %s as file %d; moving it out of the landing prefix", key, entry.status, entry.file_id)
                outcome = FileOutcome(key, contract.drop_type, entry.status, entry.file_id)
            else:
                early = None if dry_run else _start_archive(conn, store, contract, obj, entry)
                try:
                    outcome, rule = _load(conn, store, contract, obj, entry.file_id, dry_run=dry_run)
                except BaseException:
                    if early is not None and early.finished():
                        _forget_archive_copy(store, early.target)  # not loaded: not archived either
                    raise
        if not dry_run:
            with outcome.timed("move"):
                target = _finish_move(store, contract, outcome, rule, obj, early, planned)
            ledger.set_archived_key(conn, outcome.file_id, target, outcome.timings)
            outcome.moved_to = target
    return outcome


def _load(conn: psycopg.Connection, store: ObjectStore, contract: Contract, obj: StoredObject, file_id: int,
          *, dry_run: bool) -> tuple[FileOutcome, str | None]:
    key = obj.key
    outcome = FileOutcome(key, contract.drop_type, "loading", file_id, dry_run=dry_run)
    try:
        with conn.transaction():
            ledger.lock_for_load(conn, file_id)
            _step("locked", key)
            with outcome.timed("copy"):
                result = _copy_object(conn, store, contract, obj, file_id)
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
            else:
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
                    return outcome, "reject_share"
                outcome.status, outcome.rows_loaded = "loaded", result.rows_loaded
                newer = ledger.later_publication(conn, file_id) if contract.period.supersede else None
                if newer is not None:
                    # An older edition of a period whose revision is loaded already: kept (its rows stay in raw,
                    # for history) but not current.
                    outcome.status = "superseded"
                    outcome.error = f"published before file {newer}, which is loaded for the same period and stays current"
                    ledger.superseded_on_arrival(conn, file_id, newer)
                elif contract.period.supersede:
                    ledger.supersede_older(conn, file_id)
                ledger.finish(conn, file_id, outcome.status, rows_loaded=result.rows_loaded,
                              rows_rejected=result.rows_rejected, error=outcome.error, **counts)
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
        return outcome, exc.rule
    return outcome, None


def _copy_object(conn: psycopg.Connection, store: ObjectStore, contract: Contract, obj: StoredObject, file_id: int):
    """COPY one object version into its raw table: only the bytes of the ETag the ledger row names (else
    ObjectChanged). A CSV streams from S3 as it is; a workbook is read whole (a zip cannot be streamed), its
    sheet turned into CSV, and its sha256 taken of the workbook's own bytes, so the same workbook landing
    again is still recognised as a duplicate."""
    if contract.format == "csv":
        return copy_file(conn, contract, file_id,
                         lambda: _copying(obj.key, store.iter_bytes(obj.key, if_match=obj.etag)))
    workbook = store.read(obj.key, if_match=obj.etag)
    if contract.reader == "kh03":
        return _copy_kh03(conn, contract, file_id, workbook, obj.key)
    table = spreadsheet_to_csv(contract, workbook, source_name=posixpath.basename(obj.key))
    result = copy_file(conn, contract, file_id, lambda: _copying(obj.key, iter([table])))
    result.sha256, result.encoding = hashlib.sha256(workbook).hexdigest(), contract.format.upper()
    return result


def _copy_kh03(conn: psycopg.Connection, contract: Contract, file_id: int, workbook: bytes, key: str) -> LoadResult:
    """A KH03 workbook, read and checked whole by its reader, COPYed into its raw tables (one per data sheet it
    has). The ledger's period becomes the quarter the workbook itself states."""
    name = posixpath.basename(key)
    book = read_kh03(workbook, name)  # Kh03Rejected is a FileRejected: quarantined with its reason
    tables = to_csv_tables(book)
    rows_read = 0
    for table_contract, part in zip(contract.table_contracts(), ["trust_sector", *(e.name for e in contract.extra_tables)],
                                    strict=True):
        if part in tables:
            rows_read += copy_file(conn, table_contract, file_id,
                                   lambda data=tables[part]: _copying(key, iter([data]))).rows_read
    log.info("%s: KH03 %s Q%d (%s to %s), sheets %s, %d rows", name, book.financial_year, book.quarter,
             book.period_start, book.period_end, ", ".join(book.sheets), rows_read)
    published = book.revised if isinstance(book.revised, date) else book.published
    return LoadResult(sha256=hashlib.sha256(workbook).hexdigest(), encoding=contract.format.upper(), layout="default",
                      rows_read=rows_read, period=(book.period_start, book.period_end),
                      published_on=published if isinstance(published, date) else None)


class _DryRun(Exception):
    """Raised inside the load transaction to roll everything back after a dry run."""
