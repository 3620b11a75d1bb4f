"""The incremental facts and the marts kept up to date from them: a nightly build after new, re-delivered,
superseded and late files, and with a day leaving the 12-month window, gives exactly what a full rebuild gives,
and writes only the reporting days of those files."""

from __future__ import annotations

import csv
import io
import json
from datetime import date

import psycopg
import pytest
from psycopg import sql

from elt.demo import generate_medilink_drops
from elt.pipeline import connect, contracts_for, discover_new_files, ingest_file, reporting_period
from elt.transform import DbtError, build, run_dbt
from elt.warehouse import ledger
from tests.conftest import table_contents

PREFIX = "medical_records/input/"
# fact -> (id column, date column)
FACTS = {"fct_medical_records": ("medical_record_id", "record_date"),
         "fct_triage_visits": ("triage_visit_id", "visit_date")}
FIRST, SECOND, THIRD, NEW_DAY = (date(2026, 11, day) for day in (11, 12, 13, 14))
# Two older days, each a copy of FIRST's files less a row: the first is inside the 12-month window that ends on
# THIRD (it starts after 2025-11-13) and leaves it when NEW_DAY arrives; the second stays inside it.
LEAVING, STAYING = date(2025, 11, 14), date(2026, 1, 15)


def _ingest_waiting(settings, *, leave: str | None = None) -> list:
    return [ingest_file(key, settings=settings) for key in discover_new_files("medilink", settings=settings)
            if key != leave]


def _csv_rows(data: bytes) -> tuple[list[str], list[list[str]]]:
    rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))
    return rows[0], rows[1:]


def _csv_bytes(header: list[str], rows: list[list[str]]) -> bytes:
    out = io.StringIO(newline="")
    csv.writer(out, lineterminator="\n").writerows([header, *rows])
    return out.getvalue().encode()


def _query(db, fact: str, template: str, params: tuple = ()) -> list[tuple]:
    """`template` with {fact}, {id} and {day} standing for the fact's table, id column and date column."""
    id_column, date_column = FACTS[fact]
    query = sql.SQL(template).format(fact=sql.Identifier("core", fact), id=sql.Identifier(id_column),
                                     day=sql.Identifier(date_column))
    return db.execute(query, params).fetchall()


# Built from the facts through the daily rollups and the incremental state of the patient marts: a nightly build
# must leave them as a full build does.
DERIVED = ("core.int_triage_visits_daily", "core.int_medical_records_daily", "core.int_facility_activity",
           "core.int_patient_windows", "core.int_condition_patients", "core.int_condition_visits_daily",
           "analytics.triage_trends", "analytics.facility_monthly", "analytics.facility_performance",
           "analytics.facility_stats", "analytics.condition_analysis", "clinical.patient_summary")


def _contents(db) -> dict[str, list[tuple]]:
    """Both facts and the tables built from them through the daily rollups (tests/conftest.py table_contents)."""
    return table_contents(db, (*(f"core.{fact}" for fact in FACTS), *DERIVED))


def _row_versions(db, fact: str) -> dict[str, int]:
    """id -> xmin, the transaction that wrote the row: a row written again gets a new one."""
    return dict(_query(db, fact, "select {id}, xmin::text::bigint from {fact}"))


def _rows_inserted(target_path) -> dict[str, int]:
    results = json.loads((target_path / "run_results.json").read_text())["results"]
    return {r["unique_id"].rsplit(".", 1)[1]: r["adapter_response"].get("rows_affected")
            for r in results if r["unique_id"].startswith("model.")}


def test_nightly_build_equals_full_refresh_and_writes_only_the_days_of_new_files(settings, store, db, tmp_path):
    drop = generate_medilink_drops(end_date=NEW_DAY, days=4, seed=11, facilities=3, patients_per_facility=6,
                                   visits_per_day=(10, 16))
    # The new day's records file lands on the first night but its load fails (its ledger row stays
    # 'discovered', as a failed attempt leaves it); loaded the next night, it has the lowest file id of all.
    late_key = PREFIX + f"medical_records_{NEW_DAY}.csv"
    store.put(late_key, drop.files[f"medical_records_{NEW_DAY}.csv"])
    contract = contracts_for(settings)["medilink_medical_records"]
    with connect(settings) as conn:
        late = ledger.register(conn, store.head(late_key), contract, reporting_period(contract, store.head(late_key)))
    for name, data in drop.files.items():
        if str(NEW_DAY) not in name:
            store.put(PREFIX + name, data)
    for day, keep in ((LEAVING, slice(None, -1)), (STAYING, slice(1, None))):
        for kind in ("triage_visits", "medical_records"):
            header, rows = _csv_rows(drop.files[f"{kind}_{FIRST}.csv"])
            store.put(PREFIX + f"{kind}_{day}.csv", _csv_bytes(header, rows[keep]))
    assert {o.status for o in _ingest_waiting(settings, leave=late_key)} == {"loaded"}
    build(settings=settings)
    before = {fact: _row_versions(db, fact) for fact in FACTS}
    assert all(before.values())
    window_days = "select row_kind from core.int_patient_windows where reporting_day = %s order by 1"
    assert db.execute(window_days, (LEAVING,)).fetchall() == [("medical_records",), ("triage_visits",)]

    # The next night: the new day's triage file (LEAVING leaves the window), the late records file, and three
    # days delivered again (the newer file supersedes the older one): the 2nd day's triage file under the same
    # key with rows dropped, one duplicated (a second, identical visit) and one changed; the 3rd day's records
    # naming only unknown patients, so that no record is left for that day; STAYING's triage visits under
    # another key, a row dropped and one changed.
    store.put(PREFIX + f"triage_visits_{NEW_DAY}.csv", drop.files[f"triage_visits_{NEW_DAY}.csv"])
    header, rows = _csv_rows(drop.files[f"triage_visits_{SECOND}.csv"])
    level = header.index("triage_level")
    rows = [rows[0], *rows[:-2]]
    rows[-1][level] = "1" if rows[-1][level] != "1" else "2"
    store.put(PREFIX + f"triage_visits_{SECOND}.csv", _csv_bytes(header, rows))
    header, rows = _csv_rows(drop.files[f"medical_records_{THIRD}.csv"])
    for row in rows:
        row[header.index("patient_last_name")] = "Nobody"
    store.put(PREFIX + f"medical_records_{THIRD}.csv", _csv_bytes(header, rows))
    header, rows = _csv_rows(drop.files[f"triage_visits_{FIRST}.csv"])
    rows = rows[2:]
    rows[0][level] = "1" if rows[0][level] != "1" else "3"
    store.put(PREFIX + f"triage_visits_{STAYING}_resent.csv", _csv_bytes(header, rows))
    outcomes = _ingest_waiting(settings)
    assert [o.status for o in outcomes] == ["loaded"] * 5
    new_files = [o.file_id for o in outcomes]
    in_facts = [row[0] for fact in FACTS for row in _query(db, fact, "select distinct file_id from {fact}")]
    assert late.file_id in new_files and late.file_id < min(in_facts)
    superseded = [row[0] for row in db.execute("select file_id from ops.file_ledger where status = 'superseded'")]
    assert len(superseded) == 3

    nightly_target = tmp_path / "nightly"
    run_dbt(["build", "--target-path", str(nightly_target)], settings=settings)
    nightly = _contents(db)
    assert db.execute(window_days, (LEAVING,)).fetchall() == []  # LEAVING has left the window

    # Only the days of the new files were written: every other row is the very row version of the first
    # build, and the rows inserted are the new files' rows, no more.
    rebuilt = {"fct_medical_records": [THIRD, NEW_DAY], "fct_triage_visits": [SECOND, STAYING, NEW_DAY]}
    inserted = _rows_inserted(nightly_target)
    for fact in FACTS:
        kept = dict(_query(db, fact, "select {id}, xmin::text::bigint from {fact} where {day} <> all(%s)",
                           (rebuilt[fact],)))
        assert kept and all(before[fact][key] == version for key, version in kept.items()), fact
        written = _query(db, fact, "select distinct {day}, file_id from {fact} where xmin::text::bigint <> all(%s)",
                         (list(set(before[fact].values())),))
        assert {day for day, _ in written} <= set(rebuilt[fact]) and {f for _, f in written} <= set(new_files), fact
        new_rows = _query(db, fact, "select count(*) from {fact} where file_id = any(%s)", (new_files,))[0][0]
        assert inserted[fact] == new_rows > 0, fact
        assert not _query(db, fact, "select from {fact} where file_id = any(%s)", (superseded,)), fact
    assert not _query(db, "fct_medical_records", "select from {fact} where {day} = %s", (THIRD,))
    assert _query(db, "fct_triage_visits", "select from {fact} where {day} = %s", (FIRST,))

    # Row-level tests on the facts read the latest batch only (macros/test_scope.sql): a bad value in a row
    # an earlier build wrote is not read again; the same value in the batch just written fails the test;
    # `test_all_rows` reads every row.
    check = ["test", "--select", "fct_triage_visits,test_name:expression_is_true"]
    untrimmed = "update core.fct_triage_visits set conditions = array[' Malaria'] where visit_date = %s"
    db.execute(untrimmed, (FIRST,))
    run_dbt(check, settings=settings)
    with pytest.raises(DbtError, match="expression_is_true_fct_triage_visits_not_exists"):
        run_dbt([*check, "--vars", "{test_all_rows: true}"], settings=settings)
    db.execute(untrimmed, (NEW_DAY,))
    with pytest.raises(DbtError, match="expression_is_true_fct_triage_visits_not_exists"):
        run_dbt(check, settings=settings)
    # The other row rules are constraints of the facts' contracts: a value breaking one never gets in.
    with pytest.raises(psycopg.errors.CheckViolation, match="triage_level_between_1_and_5"):
        db.execute("update core.fct_triage_visits set triage_level = 9 where visit_date = %s", (FIRST,))
    with pytest.raises(psycopg.errors.NotNullViolation, match="patient_id"):
        db.execute("update core.fct_medical_records set patient_id = null where record_date = %s", (FIRST,))
    # Relationships read every row: a patient gone from the rebuilt dimension orphans old rows too.
    db.execute("update core.fct_triage_visits set patient_id = 'gone' where visit_date = %s", (FIRST,))
    with pytest.raises(DbtError, match="relationships_fct_triage_visits_patient_id"):
        run_dbt(["test", "--select", "fct_triage_visits,test_name:relationships"], settings=settings)

    # A full rebuild from scratch gives the very same rows, ids and lineage included.
    build(full_refresh=True, settings=settings)
    assert _contents(db) == nightly

    # A night with nothing new inserts nothing and changes nothing.
    idle_target = tmp_path / "idle"
    run_dbt(["build", "--target-path", str(idle_target)], settings=settings)
    assert {fact: _rows_inserted(idle_target)[fact] for fact in FACTS} == {fact: 0 for fact in FACTS}
    assert _contents(db) == nightly

    # A build whose rows break a fact's rule is refused whole: the fact keeps every row it had.
    file_id, row_number, level = db.execute(
        "select file_id, source_row_number, triage_level from core.fct_triage_visits limit 1").fetchone()
    raw_row = "update raw.medilink_triage_visits set triage_level = %s where _file_id = %s and _row_number = %s"
    db.execute(raw_row, ("9", file_id, row_number))
    with pytest.raises(DbtError, match='null value in column "priority"'):  # level 9 maps to no priority
        run_dbt(["run", "--select", "fct_triage_visits", "--full-refresh"], settings=settings)
    assert _contents(db) == nightly
    db.execute(raw_row, (str(level), file_id, row_number))

    # A mart whose new rows would break one of its rules is not published: the rules of the de-identified
    # marts are constraints of their contracts, so the build fails before the table is swapped, and the
    # table keeps the rows it had (a data test would only have failed after the new rows were served).
    published = db.execute("select * from analytics.facility_performance order by facility_id").fetchall()
    # (The fact's own constraints would refuse a level of 9: the daily rollup the mart reads gets it instead,
    # and reaches the mart through the facility totals it publishes under disclosure control.)
    db.execute("update core.int_triage_visits_daily set triage_level_sum = 9 * visit_count")
    with pytest.raises(DbtError, match="avg_triage_level_between") as refused:
        run_dbt(["run", "--select", "int_facility_activity", "facility_performance"], settings=settings)
    assert "Failing row contains" not in str(refused.value)  # Postgres's DETAIL repeats the row's values
    assert db.execute("select * from analytics.facility_performance order by facility_id").fetchall() == published



def test_nightly_build_moves_the_window_from_the_days_that_arrive_and_leave(settings, store, db):
    """No day changes here, so the marts' state is updated from the arriving and leaving days' rows alone
    (int_patient_windows, int_condition_patients): a new day, a day leaving the 12-month window, and two late
    files for days inside it (one earlier than some patients' first sighting of a condition)."""
    drop = generate_medilink_drops(end_date=NEW_DAY, days=4, seed=12, facilities=3, patients_per_facility=6,
                                   visits_per_day=(10, 16))
    early = date(2025, 12, 1)
    late_files = {f"medical_records_{STAYING}.csv", f"triage_visits_{early}.csv"}
    older_days = {}  # key -> bytes: copies of FIRST's files less a row (distinct bytes, else a duplicate)
    for day, keep in ((LEAVING, slice(None, -1)), (STAYING, slice(1, None)), (early, slice(2, None))):
        for kind, named in (("triage_visits", "conditions"), ("medical_records", "diagnosis")):
            header, rows = _csv_rows(drop.files[f"{kind}_{FIRST}.csv"])
            rows = rows[keep]
            if day == LEAVING:  # named on no other day: gone from the summaries once LEAVING leaves the window
                for row in rows:
                    row[header.index(named)] = "Leaving fever"
            older_days[f"{kind}_{day}.csv"] = _csv_bytes(header, rows)
    del older_days[f"medical_records_{early}.csv"]
    for name, data in {**drop.files, **older_days}.items():
        if str(NEW_DAY) not in name and name not in late_files:
            store.put(PREFIX + name, data)
    assert {o.status for o in _ingest_waiting(settings)} == {"loaded"}
    build(settings=settings)
    window_days = "select row_kind from core.int_patient_windows where reporting_day = %s order by 1"
    assert db.execute(window_days, (LEAVING,)).fetchall() == [("medical_records",), ("triage_visits",)]
    named_leaving = ("select count(*) from clinical.patient_summary where 'leaving fever' = any(conditions_12m) "
                     "or 'Leaving fever' = any(recent_diagnoses)")
    assert db.execute(named_leaving).fetchone()[0] > 0
    pairs_before = dict(db.execute("select row_key, xmin::text from core.int_condition_patients"))

    for name in (*late_files, *(name for name in drop.files if str(NEW_DAY) in name)):
        store.put(PREFIX + name, {**drop.files, **older_days}[name])
    assert [o.status for o in _ingest_waiting(settings)] == ["loaded"] * 4
    build(settings=settings)
    nightly = _contents(db)
    assert db.execute(window_days, (LEAVING,)).fetchall() == []
    assert db.execute(named_leaving).fetchone()[0] == 0
    assert db.execute(window_days, (STAYING,)).fetchall() == [("medical_records",), ("triage_visits",)]
    # A pair seen again is not written again (its first sighting stands); the late early day moved some earlier.
    pairs_after = dict(db.execute("select row_key, xmin::text from core.int_condition_patients"))
    assert any(pairs_after.get(key) == version for key, version in pairs_before.items())
    assert db.execute("select count(*) from core.int_condition_patients where first_visit_date = %s",
                      (early,)).fetchone()[0] > 0

    build(full_refresh=True, settings=settings)
    assert _contents(db) == nightly


def _fact_reads(db) -> dict[str, dict[str, int]]:
    """fact -> {"sequential scans": rows they read, "index (<columns>)": entries read through that index} since the
    statistics were reset. Read once every other client of the database has gone: a backend hands its counters
    over when it is idle between transactions (at most once a second) and when it exits, before it leaves
    pg_stat_activity."""
    others = ("select count(*) from pg_stat_activity where datname = current_database() "
              "and backend_type = 'client backend' and pid <> pg_backend_pid()")
    for _ in range(600):  # dbt has closed its connections; their backends may still be on their way out
        if db.execute(others).fetchone()[0] == 0:
            break
        db.execute("select pg_sleep(0.05)")
    assert db.execute(others).fetchone()[0] == 0, "dbt's connections did not end"
    db.execute("select pg_stat_clear_snapshot()")
    reads: dict[str, dict[str, int]] = {fact: {} for fact in FACTS}
    for fact, name, count in db.execute(
            "select relname, 'sequential scans', seq_tup_read from pg_stat_user_tables "
            "where schemaname = 'core' and relname = any(%(facts)s) "
            "union all "
            "select indexes.relname, 'index (' || array_to_string(array("
            "    select attribute.attname from unnest(index.indkey) with ordinality as keys (attnum, position) "
            "    inner join pg_attribute as attribute "
            "        on attribute.attrelid = index.indrelid and attribute.attnum = keys.attnum "
            "    order by keys.position), ', ') || ')', indexes.idx_tup_read "
            "from pg_stat_user_indexes as indexes inner join pg_index as index on index.indexrelid = indexes.indexrelid "
            "where indexes.schemaname = 'core' and indexes.relname = any(%(facts)s)", {"facts": list(FACTS)}):
        reads[fact][name] = count
    return reads


def test_a_nightly_build_reads_the_days_it_adds_not_the_history(settings, store, db, monkeypatch):
    """Forty days of history, then one more: the nightly build (models and tests) reads a fraction of each fact.
    Postgres is told to avoid sequential scans, as it does by itself on tables of millions of rows, so that what a
    query reads shows what it asks for, not what is cheapest on a few thousand rows: a query that needs the whole
    fact (a count of every row, a mart that aggregates every visit) reads it whole through an index, and each
    index's entries read are counted."""
    drop = generate_medilink_drops(end_date=NEW_DAY, days=41, seed=13, facilities=3, patients_per_facility=10,
                                   visits_per_day=(20, 24), bad_rows=False)
    files = dict(drop.files)
    for name in files:  # each day's rows twenty times over: big enough for Postgres to plan as for big tables
        if name.startswith(("triage_visits", "medical_records")):
            header, rows = _csv_rows(files[name])
            files[name] = _csv_bytes(header, rows * 20)
    for name, data in files.items():
        if str(NEW_DAY) not in name:
            store.put(PREFIX + name, data)
    assert {o.status for o in _ingest_waiting(settings)} == {"loaded"}
    build(settings=settings)
    for name, data in files.items():
        if str(NEW_DAY) in name:
            store.put(PREFIX + name, data)
    assert [o.status for o in _ingest_waiting(settings)] == ["loaded"] * 2
    history = {fact: _query(db, fact, "select count(*) from {fact}")[0][0] for fact in FACTS}
    assert not any(_query(db, fact, "select from {fact} where {day} = %s", (NEW_DAY,)) for fact in FACTS)
    assert all(rows > 2_000 for rows in history.values()), history

    # This connection's own reads (the counts above) reach the statistics when it is next idle: before the reset.
    db.execute("select pg_stat_force_next_flush()")
    db.execute("select pg_stat_reset()")
    assert all(not any(read.values()) for read in _fact_reads(db).values())
    monkeypatch.setenv("PGOPTIONS", "-c enable_seqscan=off")
    build(settings=settings)
    monkeypatch.delenv("PGOPTIONS")
    reads = _fact_reads(db)

    added = {fact: _query(db, fact, "select count(*) from {fact} where {day} = %s", (NEW_DAY,))[0][0] for fact in FACTS}
    assert all(rows * 30 < history[fact] for fact, rows in added.items()), (added, history)  # one day in 41
    # What a nightly reads of a fact: the new day's rows (its own build, the daily rollups, the marts' state, the
    # row tests of the batch: each a few times), one index entry per patient (relationships), a probe per file
    # (the days taken in). One whole read of the history would be as many rows as the fact held before.
    for fact, read in reads.items():
        assert sum(read.values()) < history[fact] / 2, (fact, read, history[fact])
        assert all(count < history[fact] / 4 for count in read.values()), (fact, read, history[fact])
