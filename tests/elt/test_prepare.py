"""Start-up (elt.pipeline.prepare) beside running work: every ingest DAG's first task prepares the warehouse, and three
families' DAGs start at once on the first start of the stack while the marts build. Seen there: two start-ups
deadlocked on ops.file_ledger, and a start-up replacing a raw view deadlocked with dbt reading it (the marts run
failed). Now a start-up with nothing to change takes no lock stronger than a read, and start-ups run one at a time.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import psycopg

from elt.pipeline import prepare


def test_a_start_up_with_nothing_to_change_does_not_wait_for_a_reader_of_the_raw_views(settings, db):
    """A reader (as dbt building a model) holds its lock on a raw view and the ledger until it commits; the start-up
    must neither wait for it nor make it wait."""
    with psycopg.connect(settings.database_url) as reader:
        reader.execute("select count(*) from raw.medilink_patients__valid")
        reader.execute("select count(*) from ops.file_ledger")  # the transaction stays open, locks held
        # prepare opens its own connection: a lock it waited for would raise LockNotAvailable after 3 s
        prepare(settings.model_copy(update={"database_url": _with_lock_timeout(settings.database_url)}))
        reader.rollback()


def test_a_start_up_after_a_contract_change_still_applies_it(settings, db, tmp_path):
    import shutil

    for path in settings.contracts_dir.glob("*.yml"):
        shutil.copy(path, tmp_path / path.name)
    contract = tmp_path / "medilink_facilities.yml"
    contract.write_text(contract.read_text().replace("  - {name: type, type: text}\n",
                                                     "  - {name: type, type: text}\n  - {name: ward_count, type: integer}\n"))
    before = db.execute("select fingerprint from ops.warehouse_schema").fetchone()[0]

    prepare(settings.model_copy(update={"contracts_dir": tmp_path}))

    columns = [r[0] for r in db.execute("select column_name from information_schema.columns where table_schema = 'raw' "
                                        "and table_name = 'medilink_facilities__valid' order by ordinal_position")]
    assert "ward_count" in columns
    assert db.execute("select fingerprint from ops.warehouse_schema").fetchone()[0] != before


def test_start_ups_at_once_run_one_at_a_time_and_none_deadlocks(settings, db):
    """force: each applies the whole DDL, as after an upgrade, which is when they used to deadlock."""
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: prepare(settings, force=True), range(4)))
    assert results == [None] * 4  # each returned (a deadlock would have raised)


def _with_lock_timeout(url: str) -> str:
    return url + ("&" if "?" in url else "?") + "options=-c%20lock_timeout%3D3000"
