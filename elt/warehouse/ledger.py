"""The file ledger: one row per landed object version, and the state it reached.

States: discovered -> loading -> loaded | rejected (too many bad rows) | quarantined (unreadable or
off-contract) | duplicate (same bytes already loaded for this drop type); a loaded file becomes
superseded when new bytes arrive for the same drop type and period. See docs/operations.md.
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


def lock_for_load(conn: psycopg.Connection, file_id: int) -> str:
    """Take the row lock for this file for the current transaction; returns its current status."""
    status = conn.execute(
        "select status from ops.file_ledger where file_id = %s for update", (file_id,)
    ).fetchone()[0]
    conn.execute("update ops.file_ledger set status = 'loading', started_at = now() where file_id = %s", (file_id,))
    return status


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


def supersede_older(conn: psycopg.Connection, file_id: int) -> int:
    """Mark earlier loaded files of the same drop type and period as superseded by this one."""
    cur = conn.execute(
        "update ops.file_ledger as old set status = 'superseded', superseded_by = new.file_id "
        "from ops.file_ledger as new where new.file_id = %s and old.drop_type = new.drop_type "
        "and old.period_start = new.period_start and old.period_end = new.period_end "
        "and old.status = 'loaded' and old.file_id <> new.file_id",
        (file_id,),
    )
    return cur.rowcount


def set_period(conn: psycopg.Connection, file_id: int, period: tuple[date, date], published_on: date | None = None) -> None:
    """The period the file's own contents establish (a KH03 workbook's quarter), and when it was published, so
    that supersession compares the right periods and publications."""
    conn.execute("update ops.file_ledger set period_start = %s, period_end = %s, published_on = %s where file_id = %s",
                 (period[0], period[1], published_on, file_id))


def later_publication(conn: psycopg.Connection, file_id: int) -> int | None:
    """A loaded file of the same drop type and period that was published after this one (both dates known): an
    older edition arriving late, which must not replace the revision already loaded."""
    row = conn.execute(
        "select loaded.file_id from ops.file_ledger as loaded join ops.file_ledger as new on new.file_id = %s "
        "where loaded.drop_type = new.drop_type and loaded.period_start = new.period_start "
        "and loaded.period_end = new.period_end and loaded.status = 'loaded' and loaded.file_id <> new.file_id "
        "and loaded.published_on > new.published_on order by loaded.published_on desc limit 1",
        (file_id,),
    ).fetchone()
    return row[0] if row else None


def superseded_on_arrival(conn: psycopg.Connection, file_id: int, by: int) -> None:
    conn.execute("update ops.file_ledger set superseded_by = %s where file_id = %s", (by, file_id))


def note_error(conn: psycopg.Connection, file_id: int, error: str) -> None:
    """Why a file was not decided this time, on a row that stays as it is (e.g. 'discovered')."""
    conn.execute("update ops.file_ledger set error = %s where file_id = %s", (error, file_id))


def set_archived_key(conn: psycopg.Connection, file_id: int, key: str | None,
                     timings: dict[str, float] | None = None) -> None:
    """Where the object is (or, before the load ends, where its archive copy is going)."""
    with conn.transaction():
        conn.execute(
            "update ops.file_ledger set archived_key = %s, timings = coalesce(timings, '{}') || %s where file_id = %s",
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
