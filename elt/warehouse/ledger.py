"""The file ledger: one row per landed object version, and the state it reached.

States: discovered -> loading -> loaded | rejected (too many bad rows) | quarantined (unreadable or
off-contract) | duplicate (same bytes already loaded for this drop type); a loaded file becomes
superseded when a later file (by publication, else by arrival) is loaded for the same drop type and period.
See docs/operations.md.

Exactly once: a file is loaded only by the transaction that holds its row lock and found it undecided
(lock_for_load); every other attempt, concurrent or later, finds the final state and changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from elt.contracts import Contract
from elt.storage.s3 import StoredObject

FINAL_STATES = frozenset({"loaded", "rejected", "quarantined", "duplicate", "superseded"})
# What registering an object version writes, updates when it is seen again, and reads back. The role that the
# API registers its drops with (elt/warehouse/roles.py, drop_registrar) is granted exactly these columns.
REGISTERED_COLUMNS = ("bucket", "key", "etag", "size_bytes", "drop_type", "contract_version", "period_start",
                      "period_end", "landed_at")
REGISTER_UPDATES = ("size_bytes",)
REGISTER_RETURNS = ("file_id", "status", "archived_key")
_REGISTER = sql.SQL(
    "insert into ops.file_ledger ({columns}) values ({values}) on conflict (bucket, key, etag) do update set {updates} "
    "returning {returns}"
).format(columns=sql.SQL(", ").join(map(sql.Identifier, REGISTERED_COLUMNS)),
         values=sql.SQL(", ").join(sql.Placeholder() * len(REGISTERED_COLUMNS)),
         updates=sql.SQL(", ").join(sql.SQL("{0} = excluded.{0}").format(sql.Identifier(c)) for c in REGISTER_UPDATES),
         returns=sql.SQL(", ").join(map(sql.Identifier, REGISTER_RETURNS)))
# Final states whose object is archived (kept as loaded history); the others are quarantined.
ARCHIVED_STATES = frozenset({"loaded", "duplicate", "superseded"})


@dataclass(frozen=True)
class LedgerEntry:
    file_id: int
    status: str
    archived_key: str | None


def register(conn: psycopg.Connection, obj: StoredObject, contract: Contract, period: tuple[date, date]) -> LedgerEntry:
    """The ledger row for this object version, created as 'discovered' if new. Commits."""
    with conn.transaction():
        row = conn.execute(_REGISTER, (obj.bucket, obj.key, obj.etag, obj.size, contract.drop_type, contract.version,
                                       period[0], period[1], obj.last_modified)).fetchone()
    return LedgerEntry(*row)


def lock_for_load(conn: psycopg.Connection, file_id: int) -> str | None:
    """Claim the file for this transaction's load: takes its row lock (waiting while another attempt's load
    holds it) and marks it 'loading'. Returns None when this attempt may load it, or the final state another
    attempt committed meanwhile: then nothing is changed, and the caller must not load it again."""
    status = conn.execute(
        "select status from ops.file_ledger where file_id = %s for update", (file_id,)
    ).fetchone()[0]
    if status in FINAL_STATES:
        return status
    conn.execute("update ops.file_ledger set status = 'loading', started_at = now() where file_id = %s", (file_id,))
    return None


def lock_decided(conn: psycopg.Connection, file_id: int) -> tuple[str, str | None]:
    """Take the file's row lock for the current transaction and return its status and archived_key: what
    was decided, and where its object is (or is going), as no other attempt can change them meanwhile."""
    return conn.execute(
        "select status, archived_key from ops.file_ledger where file_id = %s for update", (file_id,)
    ).fetchone()


def claim_target(conn: psycopg.Connection, file_id: int, root: str, proposed: str) -> tuple[str, str]:
    """The key under `root` (the archive or the quarantine prefix) that this file's object goes to, decided
    once for all attempts: the key an earlier or concurrent attempt recorded, else `proposed`. Returns it
    and the file's status. Commits (waiting while another attempt's load holds the row)."""
    with conn.transaction():
        return conn.execute(
            "update ops.file_ledger set archived_key = case when starts_with(archived_key, %(root)s) "
            "then archived_key else %(proposed)s end where file_id = %(file_id)s returning archived_key, status",
            {"root": root, "proposed": proposed, "file_id": file_id},
        ).fetchone()


def loaded_twin(conn: psycopg.Connection, drop_type: str, sha256: str, file_id: int) -> int | None:
    row = conn.execute(
        "select file_id from ops.file_ledger where drop_type = %s and sha256 = %s and status = 'loaded' "
        "and file_id <> %s",
        (drop_type, sha256, file_id),
    ).fetchone()
    return row[0] if row else None


def finish(conn: psycopg.Connection, file_id: int, status: str, *, sha256: str | None = None,
           rows_read: int | None = None, rows_loaded: int | None = None, rows_rejected: int | None = None,
           error: str | None = None, duplicate_of: int | None = None, encoding: str | None = None,
           layout: str | None = None) -> None:
    conn.execute(
        "update ops.file_ledger set status = %s, sha256 = coalesce(%s, sha256), rows_read = %s, rows_loaded = %s, "
        "rows_rejected = %s, error = %s, duplicate_of = %s, encoding = %s, layout = %s, finished_at = now() "
        "where file_id = %s",
        (status, sha256, rows_read, rows_loaded, rows_rejected, error, duplicate_of, encoding, layout, file_id),
    )


# Which of two files (`a`, `b`) of one drop type and period is the later, and so the current one: the later
# publication when both files state when they were published (KH03) and the dates differ, else the later
# arrival in the bucket (S3 LastModified, then key). Never the order in which their loads commit.
_A_IS_LATER = sql.SQL(
    "(case when a.published_on is not null and b.published_on is not null and a.published_on <> b.published_on "
    "then a.published_on > b.published_on "
    "else (coalesce(a.landed_at, '-infinity'), a.key, a.file_id) > (coalesce(b.landed_at, '-infinity'), b.key, b.file_id) end)"
)
# Second key of the advisory lock that serialises the decision for one drop type and period.
_PERIOD_LOCK_CLASS = 0x504552  # 'PER'


def later_loaded(conn: psycopg.Connection, file_id: int) -> tuple[int, str] | None:
    """A loaded file of the same drop type and period that is later than this one (see _A_IS_LATER), with what
    made it later ('publication' or 'arrival'): this file is then an older edition and must not become current.

    First takes a transaction lock on the drop type and period, so that two loads of one period decide one
    after the other, the second seeing the first's commit; whichever commits last, the later file stays current."""
    conn.execute(
        "select pg_advisory_xact_lock(%s, hashtext(concat_ws('|', drop_type, period_start, period_end))) "
        "from ops.file_ledger where file_id = %s", (_PERIOD_LOCK_CLASS, file_id))
    row = conn.execute(sql.SQL(
        "select a.file_id, case when a.published_on is not null and b.published_on is not null "
        "and a.published_on <> b.published_on then 'publication' else 'arrival' end "
        "from ops.file_ledger as a join ops.file_ledger as b on b.file_id = %s "
        "where a.drop_type = b.drop_type and a.period_start = b.period_start and a.period_end = b.period_end "
        "and a.status = 'loaded' and a.file_id <> b.file_id and {} "
        "order by a.file_id desc limit 1").format(_A_IS_LATER),
        (file_id,),
    ).fetchone()
    return (row[0], row[1]) if row else None


def supersede_older(conn: psycopg.Connection, file_id: int) -> int:
    """Mark the loaded files of the same drop type and period that are older than this one (see _A_IS_LATER)
    as superseded by it. Call after later_loaded, in the same transaction (it holds the period's lock)."""
    cur = conn.execute(sql.SQL(
        "update ops.file_ledger as b set status = 'superseded', superseded_by = a.file_id "
        "from ops.file_ledger as a where a.file_id = %s and b.drop_type = a.drop_type "
        "and b.period_start = a.period_start and b.period_end = a.period_end "
        "and b.status = 'loaded' and b.file_id <> a.file_id and {}").format(_A_IS_LATER),
        (file_id,),
    )
    return cur.rowcount


def set_period(conn: psycopg.Connection, file_id: int, period: tuple[date, date], published_on: date | None = None) -> None:
    """The period the file's own contents establish (a KH03 workbook's quarter), and when it was published, so
    that supersession compares the right periods and publications."""
    conn.execute("update ops.file_ledger set period_start = %s, period_end = %s, published_on = %s where file_id = %s",
                 (period[0], period[1], published_on, file_id))


def superseded_on_arrival(conn: psycopg.Connection, file_id: int, by: int) -> None:
    conn.execute("update ops.file_ledger set superseded_by = %s where file_id = %s", (by, file_id))


def note_error(conn: psycopg.Connection, file_id: int, error: str) -> None:
    """Why a file was not decided this time, on a row that stays as it is (e.g. 'discovered')."""
    conn.execute("update ops.file_ledger set error = %s where file_id = %s", (error, file_id))


def set_archived_key(conn: psycopg.Connection, file_id: int, key: str | None,
                     timings: dict[str, float] | None = None) -> None:
    """Where the object went, and the load's timings. None keeps the key recorded (claim_target) as it is."""
    with conn.transaction():
        conn.execute(
            "update ops.file_ledger set archived_key = coalesce(%s, archived_key), "
            "timings = coalesce(timings, '{}') || %s where file_id = %s",
            (key, Jsonb(timings or {}), file_id),
        )


def list_files(conn: psycopg.Connection, *, status: str | None = None, limit: int = 50) -> list[dict]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "select file_id, drop_type, key, status, rows_read, rows_loaded, rows_rejected, period_start, encoding, layout, "
            "finished_at, error, archived_key from ops.file_ledger where %(status)s::text is null or status = %(status)s "
            "order by file_id desc limit %(limit)s",
            {"status": status, "limit": limit},
        ).fetchall()


def list_rejects(conn: psycopg.Connection, file_id: int, *, limit: int = 200) -> list[dict]:
    """Rejects of one file, without raw values (those may be personal data)."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "select row_number, column_name, rule, message from ops.load_rejects where file_id = %s "
            "order by row_number, column_name limit %s",
            (file_id, limit),
        ).fetchall()
