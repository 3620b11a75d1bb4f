"""Loads running at the same time: two attempts at one file (an Airflow retry beside a zombie attempt, `elt ingest`
beside the DAG), and two files for one reporting day.

Every test runs real concurrent `ingest_file` calls (threads, each with its own Postgres session and S3 client,
against the suite's real servers) and holds them at a named step of the journey (elt.pipeline.STEPS, through
tests/elt/journey.py). Expected rows come from the CSV written here, never from the loader.
"""

from __future__ import annotations

import csv
import io
import threading

import psycopg
import pytest

import elt.pipeline
from elt.config import get_settings
from elt.contracts import load_contracts
from elt.pipeline import STEPS, FileOutcome, ingest_file
from elt.warehouse.schema import ensure_warehouse
from tests.elt.journey import AttemptDied, Rendezvous, put_later

PREFIX = "medical_records/input/"
KEY = PREFIX + "triage_visits_2026-11-01.csv"
HEADER = ["facility_name", "patient_first_name", "patient_last_name", "triage_level", "chief_complaint",
          "vital_signs", "conditions", "recommendations"]
ROWS = 40
BAD_ROW = 7  # its triage level is 7: out of range, one reject


def triage_rows(tag: str = "") -> list[list[str]]:
    return [["General Hospital Ikeja", f"Ada{tag}{n}", "Obi", "7" if n == BAD_ROW else str(n % 5 + 1), "Fever",
             "BP: 120/80", "Malaria", "Rest"] for n in range(1, ROWS + 1)]


def as_csv(rows: list[list[str]]) -> bytes:
    out = io.StringIO(newline="")
    csv.writer(out, lineterminator="\n").writerows([HEADER, *rows])
    return out.getvalue().encode()


def raw_rows(db, file_id: int) -> list[tuple]:
    columns = ", ".join(HEADER)
    return db.execute(f"select _row_number, {columns} from raw.medilink_triage_visits where _file_id = %s "  # noqa: S608
                      "order by _row_number, ctid", (file_id,)).fetchall()


def archived(store) -> list[str]:
    return sorted(o.key for o in store.list("medical_records/archive/"))


# --- Two attempts at one file ---------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["together", "overtaken", "dies"])
@pytest.mark.parametrize("step", STEPS)
def test_two_attempts_at_one_file_load_it_exactly_once(settings, store, db, monkeypatch, step, mode):
    """'together': both attempts reach the step at once and go on together. 'overtaken': the first waits at the
    step while the second runs to its end (or until it waits for the first's lock). 'dies': as overtaken, then
    the first dies there (a zombie attempt; the exception stands for its crash or lost connection)."""
    rows = triage_rows()
    data = as_csv(rows)
    store.put(KEY, data)
    rendezvous = Rendezvous(settings.database_url, step, parties=("first", "second"), mode=mode)
    monkeypatch.setattr(elt.pipeline, "step_hook", rendezvous.hook)

    results = rendezvous.run(lambda party: ingest_file(KEY, settings=settings))
    monkeypatch.undo()

    reached = rendezvous.reached
    died = [party for party, result in results.items() if isinstance(result, AttemptDied)]
    assert died == (["first"] if mode == "dies" else []), results
    # Exactly one attempt committed a load; an attempt that did not (and did not die holding the lock) never
    # even locked the file for loading, let alone copied it.
    winners = [party for party in reached if "committed" in reached[party]]
    assert len(winners) == 1, reached
    for party in set(reached) - set(winners) - set(died):
        assert not {"locked", "copying", "copied"} & set(reached[party]), reached

    # The file is in its raw table once, row for row, with its one reject once.
    (file_id, status, counts, archived_key), = db.execute(
        "select file_id, status, array[rows_read, rows_loaded, rows_rejected], archived_key from ops.file_ledger"
    ).fetchall()
    assert (status, counts) == ("loaded", [ROWS, ROWS - 1, 1])
    assert raw_rows(db, file_id) == [(n, *row) for n, row in enumerate(rows, start=1)]
    assert db.execute("select row_number, column_name, rule from ops.load_rejects").fetchall() == [
        (BAD_ROW, "triage_level", "range")]
    # The archived object exists, once, where the ledger says, with the file's bytes; nothing is left in landing.
    assert archived(store) == [archived_key]
    assert store.read(archived_key) == data
    assert not store.exists(KEY)
    assert list(store.list("medical_records/quarantine/")) == []

    # What each attempt reports.
    for party, result in results.items():
        if party in died:
            continue
        assert isinstance(result, FileOutcome), result
        if party in winners:
            assert (result.status, result.decided_earlier) == ("loaded", False)
            assert (result.rows_read, result.rows_loaded, result.rows_rejected) == (ROWS, ROWS - 1, 1)
        else:  # it found the file decided, or (starting after the winner had moved it) no longer in landing
            assert (result.status, result.decided_earlier) in {("loaded", True), ("missing", False)}, result
            assert result.rows_loaded is None


def test_a_zombie_that_fails_after_the_retry_committed_keeps_the_archive(settings, store, db, monkeypatch):
    """The zombie made its archive copy, then froze before its load while the retry loaded the file, archived
    it (at the same key) and removed it from landing; then the zombie's load failed. Before, its clean-up
    deleted the archive copy the retry had committed to, and the file was then nowhere."""
    data = as_csv(triage_rows())
    store.put(KEY, data)
    frozen, retried = threading.Event(), threading.Event()
    real_load = elt.pipeline._load

    def load(*args, **kwargs):
        if threading.current_thread().name == "zombie":
            frozen.set()
            retried.wait()
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        return real_load(*args, **kwargs)

    monkeypatch.setattr(elt.pipeline, "_load", load)
    results = {}

    def zombie():
        try:
            ingest_file(KEY, settings=settings)
        except psycopg.OperationalError as exc:
            results["zombie"] = exc

    thread = threading.Thread(target=zombie, name="zombie")
    thread.start()
    frozen.wait()
    try:
        results["retry"] = ingest_file(KEY, settings=settings)
    finally:
        retried.set()
        thread.join()
    monkeypatch.undo()

    (archived_key,) = db.execute("select archived_key from ops.file_ledger where status = 'loaded'").fetchone()
    assert archived(store) == [archived_key] and store.read(archived_key) == data
    assert not store.exists(KEY)
    assert isinstance(results["zombie"], psycopg.OperationalError)
    assert results["retry"].status == "loaded" and not results["retry"].decided_earlier


# --- Duplicate rows are impossible by construction -------------------------------------------------------------


def row_key(db, table: str) -> str | None:
    """The name of the unique constraint on exactly (_file_id, _row_number) of `table`, if it has one."""
    row = db.execute(
        "select conname from pg_constraint where conrelid = %s::regclass and contype = 'u' and conkey::int[] = "
        "array(select attnum from pg_attribute where attrelid = %s::regclass and attname in ('_file_id', '_row_number') "
        "order by attname)::int[]", (table, table)).fetchone()
    return row[0] if row else None


def test_every_raw_table_has_the_key_and_refuses_a_second_copy_of_a_files_row(settings, store, db):
    tables = [c.target_table for contract in load_contracts(get_settings().contracts_dir).values()
              for c in contract.table_contracts()]
    assert len(tables) >= 8 and all(row_key(db, table) for table in tables)
    store.put(KEY, as_csv(triage_rows()))
    file_id = ingest_file(KEY, settings=settings).file_id
    with pytest.raises(psycopg.errors.UniqueViolation):
        db.execute("insert into raw.medilink_triage_visits (facility_name, _file_id, _row_number) values ('x', %s, 1)",
                   (file_id,))


def test_start_up_gives_an_existing_raw_table_its_key_removing_a_file_loaded_twice(settings, db):
    """A raw table from before the key, holding a file twice (two attempts both loaded it) with its rejects
    twice: the start-up keeps one copy of each row and of each reject, and adds the key."""
    table = "raw.medilink_triage_visits"
    if row_key(db, table):
        db.execute(f"alter table {table} drop constraint {row_key(db, table)}")  # noqa: S608 - names from the catalog
    db.execute("insert into ops.file_ledger (bucket, key, etag, drop_type, contract_version, status) values "
               "('b', 'k', 'e', 'medilink_triage_visits', 1, 'loaded')")
    file_id = db.execute("select file_id from ops.file_ledger").fetchone()[0]
    for _ in range(2):  # the same three rows, twice, as two loads of one file left them
        for number, first_name in ((1, "Ada"), (2, "Bola"), (3, "Chi")):
            db.execute("insert into raw.medilink_triage_visits (facility_name, patient_first_name, _file_id, "
                       "_row_number) values ('General Hospital', %s, %s, %s)", (first_name, file_id, number))
        db.execute("insert into ops.load_rejects (file_id, row_number, column_name, rule, message) values "
                   "(%s, 2, 'triage_level', 'required', 'triage_level is required')", (file_id,))

    db.execute("delete from ops.warehouse_schema")  # a warehouse from before: its DDL not fingerprinted
    ensure_warehouse(db, load_contracts(get_settings().contracts_dir))

    assert db.execute("select _row_number, patient_first_name from raw.medilink_triage_visits order by 1").fetchall() == [
        (1, "Ada"), (2, "Bola"), (3, "Chi")]
    assert db.execute("select row_number, rule from ops.load_rejects").fetchall() == [(2, "required")]
    assert row_key(db, table)


def test_the_key_is_each_raw_tables_only_index_and_start_up_drops_the_older_brin(settings, db):
    """Raw tables from before decision 0017 also had a BRIN index on _file_id, which every loaded row paid for;
    the key's B-tree, led by _file_id, finds a file's rows as well. Start-up drops the BRIN and keeps the key."""
    db.execute("create index medilink_triage_visits__file_id_brin on raw.medilink_triage_visits using brin (_file_id)")

    db.execute("delete from ops.warehouse_schema")  # a warehouse from before: its DDL not fingerprinted
    ensure_warehouse(db, load_contracts(get_settings().contracts_dir))

    tables = [c.target_table for contract in load_contracts(get_settings().contracts_dir).values()
              for c in contract.table_contracts()]
    indexes = dict(db.execute("select indrelid::regclass::text, array_agg(indexrelid::regclass::text) from pg_index "
                              "where indrelid = any(%s::regclass[]) group by 1", (tables,)).fetchall())
    assert indexes == {table: [f"{table}__file_row_key"] for table in tables}


# --- Two files for one reporting day -----------------------------------------------------------------------------


@pytest.mark.parametrize("commits_first", ["earlier_arrival", "later_arrival"])
def test_the_later_arrival_is_current_whichever_load_commits_first(settings, store, db, monkeypatch, commits_first):
    # The later arrival has the smaller key, so that its arrival (LastModified), not its name, must decide.
    earlier, later = PREFIX + "triage_visits_2026-11-01_b.csv", PREFIX + "triage_visits_2026-11-01_a.csv"
    store.put(earlier, as_csv(triage_rows("old")))
    put_later(store, later, as_csv(triage_rows("new")), after=earlier)
    keys = {"earlier_arrival": earlier, "later_arrival": later}
    commits_last = next(party for party in keys if party != commits_first)
    # Both loads start; the one to commit last waits, registered, until the other has committed and finished.
    rendezvous = Rendezvous(settings.database_url, "registered", parties=tuple(keys), mode="overtaken",
                            held=commits_last)
    monkeypatch.setattr(elt.pipeline, "step_hook", rendezvous.hook)

    outcomes = rendezvous.run(lambda party: ingest_file(keys[party], settings=settings))
    monkeypatch.undo()

    assert all(isinstance(o, FileOutcome) for o in outcomes.values()), outcomes
    ids = {party: outcome.file_id for party, outcome in outcomes.items()}
    ledger = dict(db.execute("select file_id, array[status, superseded_by::text] from ops.file_ledger").fetchall())
    assert ledger == {ids["later_arrival"]: ["loaded", None],
                      ids["earlier_arrival"]: ["superseded", str(ids["later_arrival"])]}
    assert outcomes["later_arrival"].status == "loaded"
    if commits_last == "earlier_arrival":
        assert outcomes["earlier_arrival"].status == "superseded"
        assert f"arrived before file {ids['later_arrival']}" in outcomes["earlier_arrival"].error
    # The superseded file's rows stay in raw, for history; both objects are archived.
    assert len(raw_rows(db, ids["earlier_arrival"])) == len(raw_rows(db, ids["later_arrival"])) == ROWS
    assert len(archived(store)) == 2 and not store.exists(earlier) and not store.exists(later)
