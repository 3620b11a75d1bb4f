"""Ingestion against a real Postgres and S3 endpoint: exactly-once, rejects, quarantine, encodings."""

from __future__ import annotations

import json
import threading
import time

import pytest

from elt.pipeline import discover_new_files, ingest_file

PREFIX = "medical_records/input/"
TRIAGE_HEADER = "facility_name,patient_first_name,patient_last_name,triage_level,chief_complaint,vital_signs,conditions,recommendations"


def run(settings) -> dict[str, object]:
    return {key: ingest_file(key, settings=settings) for key in discover_new_files("medilink", settings=settings)}


def count(db, sql: str, *params) -> int:
    return db.execute(sql, params).fetchone()[0]


def test_csv_realities_load_with_rejects_at_the_right_rows(settings, store, db):
    body = (
        "\ufeff" + TRIAGE_HEADER + "\r\n"
        "General Hospital ,John,Doe,3,Chest pain,\"BP: 140/90, HR: 88\",Hypertension;Asthma,Rest\r\n"  # row 1
        "General Hospital,Jane,Doe,7,Cough,N/A,,\r\n"  # row 2: level out of range
        "General Hospital,Ada,Obi,2,\"Fever\nand chills\",-,,\r\n"  # row 3: quoted newline
        ",Ada,Obi,high,Fever,,,\r\n"  # row 4: facility missing and level not a number
        "General Hospital,Ada,Obi,2,Fever,,,\r\n"  # row 5: duplicate-looking but distinct row
    )
    store.put(PREFIX + "triage_visits_2026-11-01.csv", body.encode("utf-8"))

    outcome = run(settings)[PREFIX + "triage_visits_2026-11-01.csv"]

    assert (outcome.status, outcome.rows_read, outcome.rows_loaded, outcome.rows_rejected) == ("loaded", 5, 3, 2)
    rows = db.execute(
        "select _row_number, facility_name, triage_level, chief_complaint, vital_signs from raw.medilink_triage_visits__valid "
        "order by _row_number"
    ).fetchall()
    assert rows == [
        (1, "General Hospital", 3, "Chest pain", "BP: 140/90, HR: 88"),  # trailing space trimmed
        (3, "General Hospital", 2, "Fever\nand chills", None),  # '-' is null, newline kept
        (5, "General Hospital", 2, "Fever", None),
    ]
    rejects = db.execute("select row_number, column_name, rule from ops.load_rejects order by 1, 2").fetchall()
    assert rejects == [(2, "triage_level", "range"), (4, "facility_name", "required"), (4, "triage_level", "type")]
    assert outcome.moved_to.startswith("medical_records/archive/")
    assert store.exists(outcome.moved_to) and not store.exists(PREFIX + "triage_visits_2026-11-01.csv")
    archived, timings = db.execute("select archived_key, timings from ops.file_ledger").fetchone()
    assert archived == outcome.moved_to
    assert set(timings) == {"copy", "validate", "commit", "move"} and all(t >= 0 for t in timings.values())


def test_windows_1252_text_is_decoded(settings, store, db):
    store.put(PREFIX + "facilities.csv", "name,state,lga,lat,lon,type\r\nClinique Sainte-Thérèse,LAGOS,Ikeja,6.6,3.35,Clinic\r\n".encode("cp1252"))
    outcome = run(settings)[PREFIX + "facilities.csv"]
    assert db.execute("select name, lat from raw.medilink_facilities__valid").fetchall() == [("Clinique Sainte-Thérèse", 6.6)]
    assert outcome.encoding == "WIN1252"
    assert db.execute("select encoding from ops.file_ledger").fetchone() == ("WIN1252",)


def test_rerun_and_duplicate_bytes_load_once(settings, store, db):
    data = b"name,state,lga,lat,lon,type\nGeneral Hospital,LAGOS,Ikeja,6.6,3.35,Hospital\n"
    store.put(PREFIX + "facilities_2026-11-01.csv", data)
    first = run(settings)
    assert [o.status for o in first.values()] == ["loaded"]
    assert run(settings) == {}  # nothing left waiting: the file was archived

    store.put(PREFIX + "copy/facilities_2026-11-01.csv", data)  # same bytes, another key
    again = run(settings)
    assert [o.status for o in again.values()] == ["duplicate"]
    assert count(db, "select count(*) from raw.medilink_facilities") == 1
    assert count(db, "select count(*) from ops.file_ledger where status = 'loaded'") == 1


def test_new_bytes_for_the_same_day_supersede_the_old_file(settings, store, db):
    header = "name,state,lga,lat,lon,type\n"
    store.put(PREFIX + "facilities_2026-11-01.csv", (header + "A,LAGOS,Ikeja,6.6,3.3,Clinic\n").encode())
    run(settings)
    store.put(PREFIX + "facilities_2026-11-01.csv", (header + "A,LAGOS,Ikeja,6.6,3.3,Hospital\n").encode())
    run(settings)
    ledger = db.execute("select file_id, status, superseded_by from ops.file_ledger order by file_id").fetchall()
    assert [(status, by) for _, status, by in ledger] == [("superseded", ledger[1][0]), ("loaded", None)]
    # History is kept in raw; the current version is the loaded file.
    assert count(db, "select count(*) from raw.medilink_facilities") == 2


@pytest.mark.parametrize(
    ("name", "payload", "rule"),
    [
        ("patients_empty.csv", b"", "empty_file"),
        ("patients_header_only.csv", b"facility_name,first_name,last_name,sex,dob,phone\n", "no_rows"),
        ("patients_wrong_header.csv", b"facility,first,last\nA,B,C\n", "unexpected_columns"),
        ("patients_missing_column.csv", b"facility_name,first_name,last_name,sex\nA,B,C,M\n", "missing_columns"),
        ("patients_binary.csv", b"facility_name,first_name,last_name,sex,dob,phone\nA,\x81\x8d\xff\xfe,C,M,1990-01-01,1\n", "undecodable_text"),
        ("patients_ragged.csv", b"facility_name,first_name,last_name,sex,dob,phone\nA,B,C,M,1990-01-01,1,extra\n", "malformed_csv"),
    ],
)
def test_bad_files_are_quarantined_with_a_reason_and_good_files_still_load(settings, store, db, name, payload, rule):
    store.put(PREFIX + name, payload)
    store.put(PREFIX + "facilities.csv", b"name,state,lga,lat,lon,type\nA,LAGOS,Ikeja,6.6,3.3,Clinic\n")

    outcomes = run(settings)

    bad = outcomes[PREFIX + name]
    assert bad.status == "quarantined" and bad.error.startswith(rule), bad.error
    assert outcomes[PREFIX + "facilities.csv"].status == "loaded"
    sidecar = json.loads(store.read(bad.moved_to + ".error.json"))
    assert sidecar["rule"] == rule and sidecar["original_key"] == PREFIX + name
    assert bad.moved_to.startswith("medical_records/quarantine/") and store.exists(bad.moved_to)
    assert [o.key for o in store.list("medical_records/archive/")] == [outcomes[PREFIX + "facilities.csv"].moved_to]
    assert count(db, "select count(*) from raw.medilink_patients") == 0
    status, error = db.execute("select status, error from ops.file_ledger where key = %s", (PREFIX + name,)).fetchone()
    assert status == "quarantined" and rule in error


def test_a_misspelled_column_is_named_with_the_one_it_replaced(settings, store):
    store.put(PREFIX + "patients.csv", b"facility_name,first_name,surname,sex,dob,phone\nA,B,C,M,1990-01-01,1\n")
    error = run(settings)[PREFIX + "patients.csv"].error
    # By its position and the contract's names: the header's own text is never repeated (it may be a patient's row).
    assert "header column 3 is not a column of contract medilink_patients v1 (did you mean last_name?); missing: last_name" in error
    assert "surname" not in error


def test_many_bad_rows_in_a_large_file_each_get_their_reject_at_their_row(settings, store, db):
    # 12,000 rows, every third without a facility and every seventh with a quoted newline in its notes:
    # the rejects pass finds the bad rows in one scan and writes theirs by address, so this checks that
    # the addresses and the row numbers still agree at scale (multi-line rows included).
    header = "facility_name,patient_first_name,patient_last_name,record_type,diagnosis,treatment,medications,notes"
    lines = [header]
    for row in range(1, 12_001):
        facility = "" if row % 3 == 0 else "General Hospital"
        notes = '"line one\nline two"' if row % 7 == 0 else "stable"
        lines.append(f"{facility},Ada,Obi{row},Consultation,Malaria,Rest,None,{notes}")
    store.put(PREFIX + "medical_records_2026-11-20.csv", ("\n".join(lines) + "\n").encode())
    outcome = run(settings)[PREFIX + "medical_records_2026-11-20.csv"]
    assert (outcome.status, outcome.rows_read, outcome.rows_rejected, outcome.rows_loaded) == ("loaded", 12_000, 4_000, 8_000)
    rejects = db.execute("select row_number, column_name, rule from ops.load_rejects order by 1").fetchall()
    assert rejects == [(row, "facility_name", "required") for row in range(3, 12_001, 3)]
    # Each reject points at the row that broke the rule: its surname carries its row number.
    assert db.execute(
        "select count(*) from raw.medilink_medical_records as raw_rows join ops.load_rejects as rejects "
        "on rejects.file_id = raw_rows._file_id and rejects.row_number = raw_rows._row_number "
        "where raw_rows.patient_last_name <> 'Obi' || raw_rows._row_number").fetchone()[0] == 0


def test_file_over_the_bad_row_share_is_refused_whole(settings, store, db):
    # 2 of 3 rows break rules: 67% > the contract's 50%.
    store.put(PREFIX + "patients.csv", b"facility_name,first_name,last_name,sex,dob,phone\n"
              b"A,B,C,X,1990-01-01,1\nA,D,E,M,31/02/1990,1\nA,F,G,F,1991-05-06,1\n")
    outcome = run(settings)[PREFIX + "patients.csv"]
    assert outcome.status == "rejected" and outcome.rows_rejected == 2 and "67%" in outcome.error
    assert count(db, "select count(*) from raw.medilink_patients") == 0
    # The row-level reasons are kept so the sender can fix the file.
    assert db.execute("select row_number, rule from ops.load_rejects order by 1").fetchall() == [(1, "allowed"), (2, "type")]
    assert outcome.moved_to.startswith("medical_records/quarantine/")
    assert list(store.list("medical_records/archive/")) == []  # its early archive copy was taken back


def test_a_file_replaced_while_it_loads_archives_only_the_loaded_bytes_and_keeps_the_new_ones(settings, store, db,
                                                                                              monkeypatch):
    import elt.pipeline

    key = PREFIX + "facilities.csv"
    store.put(key, b"name,state,lga,lat,lon,type\nA,LAGOS,Ikeja,6.6,3.3,Clinic\n")
    real_copy_file = elt.pipeline.copy_file

    def copy_then_upload_again(*args, **kwargs):
        result = real_copy_file(*args, **kwargs)
        # The archive copy runs beside the load; the sender re-uploads once it is made.
        deadline = time.monotonic() + 10
        while not list(store.list("medical_records/archive/")) and time.monotonic() < deadline:
            time.sleep(0.05)
        store.put(key, b"name,state,lga,lat,lon,type\nB,KANO,Nassarawa,12.0,8.5,Clinic\n")
        return result

    monkeypatch.setattr(elt.pipeline, "copy_file", copy_then_upload_again)
    first = ingest_file(key, settings=settings)
    monkeypatch.undo()

    # The archive holds exactly the bytes that were loaded; the new upload under the same key is not deleted
    # with them, and waits for the next run.
    assert first.status == "loaded" and first.moved_to.startswith("medical_records/archive/")
    assert [obj.key for obj in store.list("medical_records/archive/")] == [first.moved_to]
    assert store.read(first.moved_to).startswith(b"name,state,lga,lat,lon,type\nA,")
    assert store.read(key).startswith(b"name,state,lga,lat,lon,type\nB,")
    second = ingest_file(key, settings=settings)
    assert second.status == "loaded" and not store.exists(key)
    assert store.read(second.moved_to).startswith(b"name,state,lga,lat,lon,type\nB,")
    assert db.execute("select name from raw.medilink_facilities__valid order by 1").fetchall() == [("A",), ("B",)]


def test_a_file_replaced_before_its_archive_copy_is_not_archived_and_not_lost(settings, store, db, monkeypatch):
    import elt.pipeline

    key = PREFIX + "facilities.csv"
    store.put(key, b"name,state,lga,lat,lon,type\nA,LAGOS,Ikeja,6.6,3.3,Clinic\n")
    real_copy, real_copy_file = elt.pipeline.ObjectStore.copy, elt.pipeline.copy_file
    uploaded_again = threading.Event()

    def copy_then_upload_again(*args, **kwargs):
        result = real_copy_file(*args, **kwargs)
        store.put(key, b"name,state,lga,lat,lon,type\nB,KANO,Nassarawa,12.0,8.5,Clinic\n")  # the sender re-uploads
        uploaded_again.set()
        return result

    def archive_copy_after_the_upload(self, source_key, target_key, **kwargs):
        uploaded_again.wait(10)
        return real_copy(self, source_key, target_key, **kwargs)

    monkeypatch.setattr(elt.pipeline, "copy_file", copy_then_upload_again)
    monkeypatch.setattr(elt.pipeline.ObjectStore, "copy", archive_copy_after_the_upload)
    first = ingest_file(key, settings=settings)
    monkeypatch.undo()

    # The loaded bytes were overwritten before they could be archived: nothing is archived under their name
    # (certainly not the new bytes), and the new upload waits for the next run.
    assert (first.status, first.moved_to) == ("loaded", None)
    assert list(store.list("medical_records/archive/")) == []
    assert store.read(key).startswith(b"name,state,lga,lat,lon,type\nB,")
    second = ingest_file(key, settings=settings)
    assert second.status == "loaded" and not store.exists(key)
    assert db.execute("select name from raw.medilink_facilities__valid order by 1").fetchall() == [("A",), ("B",)]


def test_a_file_replaced_before_it_is_read_loads_nothing_now_and_its_new_version_next(settings, store, db,
                                                                                     monkeypatch):
    import elt.pipeline

    key = PREFIX + "facilities.csv"
    store.put(key, b"name,state,lga,lat,lon,type\nA,LAGOS,Ikeja,6.6,3.3,Clinic\n")
    old = store.head(key)
    real_iter_bytes = elt.pipeline.ObjectStore.iter_bytes

    def upload_again_then_read(self, *args, **kwargs):
        store.put(key, b"name,state,lga,lat,lon,type\nB,KANO,Nassarawa,12.0,8.5,Clinic\n")  # the sender re-uploads
        return real_iter_bytes(self, *args, **kwargs)

    monkeypatch.setattr(elt.pipeline.ObjectStore, "iter_bytes", upload_again_then_read)
    first = ingest_file(key, settings=settings)
    monkeypatch.undo()

    # The version the ledger row names is gone: none of the new bytes are loaded under its name either.
    assert first.status == "changed" and "uploaded again" in first.error and first.moved_to is None
    assert db.execute("select status, etag, error is not null from ops.file_ledger").fetchall() == [
        ("discovered", old.etag, True)]
    assert db.execute("select count(*) from raw.medilink_facilities").fetchone()[0] == 0
    assert list(store.list("medical_records/archive/")) == []
    second = ingest_file(key, settings=settings)
    assert second.status == "loaded" and second.file_id != first.file_id
    assert db.execute("select name from raw.medilink_facilities__valid").fetchall() == [("B",)]
    assert db.execute("select etag from ops.file_ledger where file_id = %s", (second.file_id,)).fetchone()[0] == \
        store.head(second.moved_to).etag


def test_dry_run_counts_but_loads_and_moves_nothing(settings, store, db):
    store.put(PREFIX + "facilities.csv", b"name,state,lga,lat,lon,type\nA,LAGOS,Ikeja,6.6,3.3,Clinic\nB,KANO,Nassarawa,99,8.5,Clinic\n")
    outcome = ingest_file(PREFIX + "facilities.csv", dry_run=True, settings=settings)
    assert (outcome.status, outcome.rows_read, outcome.rows_loaded, outcome.rows_rejected) == ("loaded", 2, 1, 1)
    assert count(db, "select count(*) from raw.medilink_facilities") == 0
    assert count(db, "select count(*) from ops.load_rejects") == 0
    assert store.exists(PREFIX + "facilities.csv")


def test_in_progress_uploads_and_other_prefixes_are_not_picked_up(settings, store):
    for key in ["facilities.csv.tmp", "_facilities.csv", "notes.txt", "../archive/facilities.csv"]:
        store.put(PREFIX + key, b"x")
    store.put("medical_records/archive/2026-11-01/facilities.csv", b"x")
    store.put("medical_records/quarantine/2026-11-01/facilities.csv", b"x")
    store.put(PREFIX + "facilities.csv", b"name,state,lga,lat,lon,type\nA,LAGOS,Ikeja,6.6,3.3,Clinic\n")
    assert discover_new_files("medilink", settings=settings) == [PREFIX + "facilities.csv"]


def test_typed_raw_tables_of_earlier_versions_become_text_and_keep_their_rows(settings, db):
    from elt.pipeline import prepare

    db.execute("drop view raw.medilink_facilities__valid")
    db.execute("drop table raw.medilink_facilities")
    # The shape before decision 0003: typed columns, no defaults, and a dbt staging view on top.
    db.execute("create table raw.medilink_facilities (name text, state text, lga text, lat double precision, "
               "lon double precision, type text, _file_id bigint not null, _row_number bigint not null, "
               "_loaded_at timestamptz not null default now())")
    db.execute("insert into raw.medilink_facilities values ('A', 'LAGOS', 'Ikeja', 6.6, 3.35, 'Clinic', 1, 1)")
    db.execute("create schema staging")
    db.execute("create view staging.stg_old as select name, lat from raw.medilink_facilities")
    db.execute("delete from ops.warehouse_schema")  # a warehouse from before: its DDL not fingerprinted

    prepare(settings)

    types = dict(db.execute("select column_name, data_type from information_schema.columns "
                            "where table_schema = 'raw' and table_name = 'medilink_facilities'").fetchall())
    assert types["lat"] == types["lon"] == "text"
    assert db.execute("select name, lat, _file_id, _row_number from raw.medilink_facilities").fetchall() == [
        ("A", "6.6", 1, 1)]
    assert db.execute("select to_regclass('staging.stg_old')").fetchone() == (None,)  # dbt rebuilds it


def test_a_contract_that_changes_its_columns_gets_its_valid_view_rebuilt(settings, db, tmp_path):
    import shutil

    from elt.pipeline import prepare

    for path in settings.contracts_dir.glob("*.yml"):
        shutil.copy(path, tmp_path / path.name)
    contract = tmp_path / "medilink_facilities.yml"
    # A new column in the middle and a type change: `create or replace view` alone cannot do either.
    text = contract.read_text().replace("  - {name: lat, type: double precision, min: 4.0, max: 14.0}\n",
                                        "  - {name: ward_count, type: integer}\n  - {name: lat, type: numeric}\n")
    contract.write_text(text)
    db.execute("create schema staging")
    db.execute("create view staging.stg_old as select name from raw.medilink_facilities__valid")

    prepare(settings.model_copy(update={"contracts_dir": tmp_path}))

    columns = db.execute("select column_name, data_type from information_schema.columns where table_schema = 'raw' "
                         "and table_name = 'medilink_facilities__valid' order by ordinal_position").fetchall()
    assert columns[:5] == [("name", "text"), ("state", "text"), ("lga", "text"), ("ward_count", "integer"),
                           ("lat", "numeric")]
