"""The folder source against the real Postgres and S3 endpoint: a mounted folder of drops is taken in exactly as the
landing bucket's prefixes are (same keys, ledger, rejects, archive and quarantine), and nothing twice."""

from __future__ import annotations

import json
import os
import shutil
import time
from datetime import UTC, datetime

import pytest

from elt.connectors.base import ConnectorError, RunContext
from elt.connectors.sources import folder

INPUT = "medical_records/input/"
PATIENTS = "facility_name,first_name,last_name,sex,dob,phone\r\n"
TRIAGE = ("facility_name,patient_first_name,patient_last_name,triage_level,chief_complaint,vital_signs,conditions,"
          "recommendations\r\n")


def ctx(drop_type: str | None = None) -> RunContext:
    return RunContext(connector="clinic_drops", run_key="clinic_drops-run", as_of=None,
                      started_at=datetime(2026, 12, 6, 2, 0, tzinfo=UTC), drop_type=drop_type)


def source(settings, root, settle_seconds: float = 60.0):
    return folder.open(folder.Options(kind="folder", path=root, settle_seconds=settle_seconds), settings)


def drop(root, key: str, text: str, *, age_seconds: float = 3600.0):
    """A file under the folder, last written `age_seconds` ago."""
    path = root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    then = time.time() - age_seconds
    os.utime(path, (then, then))
    return path


def count(db, query: str, *params) -> int:
    return db.execute(query, params).fetchone()[0]


def archived(root) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in (root / "medical_records/archive").rglob("*") if p.is_file())


def test_new_files_are_ingested_and_archived_like_landed_objects(settings, db, store, tmp_path):
    drop(tmp_path, INPUT + "patients_2026-11-20.csv", PATIENTS + "General Hospital,Ada,Obi,F,1980-01-02,\r\n"
         "General Hospital,Bola,Ade,M,1975-05-06,\r\n")
    drop(tmp_path, INPUT + "triage_visits_2026-11-20.csv", TRIAGE + "General Hospital,Ada,Obi,3,Cough,,,\r\n"
         "General Hospital,Bola,Ade,9,Fever,,,\r\n")  # row 2: triage level out of 1..5
    drop(tmp_path, INPUT + "notes.txt", "not a drop")
    outside = drop(tmp_path, "elsewhere/secret.csv", PATIENTS + "General Hospital,Eve,Out,F,1980-01-02,\r\n")
    (tmp_path / INPUT / "patients_2026-11-19.csv").symlink_to(outside)  # a link out of the folder is not a drop

    pulled = source(settings, tmp_path).pull(ctx(), None)

    assert pulled.files == (INPUT + "patients_2026-11-20.csv", INPUT + "triage_visits_2026-11-20.csv")
    assert pulled.rows == 3  # two patients and one good visit
    assert count(db, "select count(*) from raw.medilink_patients") == 2
    assert db.execute("select row_number, column_name, rule from ops.load_rejects").fetchall() == [
        (2, "triage_level", "range")]
    day = datetime.now(UTC).date().isoformat()
    assert archived(tmp_path) == [f"medical_records/archive/{day}/patients_2026-11-20.csv",
                                  f"medical_records/archive/{day}/triage_visits_2026-11-20.csv"]
    assert sorted(p.name for p in (tmp_path / INPUT).iterdir()) == ["notes.txt", "patients_2026-11-19.csv"]
    keys = db.execute("select key, status, period_start::text from ops.file_ledger order by key").fetchall()
    assert keys == [(INPUT + "patients_2026-11-20.csv", "loaded", "2026-11-20"),
                    (INPUT + "triage_visits_2026-11-20.csv", "loaded", "2026-11-20")]


def test_a_file_still_being_written_waits_until_it_settles(settings, db, tmp_path):
    path = drop(tmp_path, INPUT + "patients_2026-11-21.csv", PATIENTS + "General Hospital,Ada,Obi,F,1980-01-02,\r\n",
                age_seconds=5)
    drop(tmp_path, INPUT + "patients_2026-11-22.csv.part", PATIENTS)  # an uploader's temporary name
    source_ = source(settings, tmp_path, settle_seconds=60)

    assert source_.pull(ctx("medilink_patients"), None).files == ()
    assert path.exists() and count(db, "select count(*) from ops.file_ledger") == 0

    then = time.time() - 61
    os.utime(path, (then, then))  # the writer finished a minute ago
    assert source_.pull(ctx("medilink_patients"), None).files == (INPUT + "patients_2026-11-21.csv",)
    assert count(db, "select count(*) from raw.medilink_patients") == 1
    assert (tmp_path / INPUT / "patients_2026-11-22.csv.part").exists()


def test_a_bad_file_is_quarantined_with_its_reason(settings, db, tmp_path):
    drop(tmp_path, INPUT + "patients_2026-11-23.csv", "facility_name,first_name\r\nGeneral Hospital,Ada\r\n")

    pulled = source(settings, tmp_path).pull(ctx("medilink_patients"), None)

    assert pulled.rows == 0
    day = datetime.now(UTC).date().isoformat()
    target = tmp_path / f"medical_records/quarantine/{day}/patients_2026-11-23.csv"
    assert target.exists() and not (tmp_path / INPUT / "patients_2026-11-23.csv").exists()
    reason = json.loads(target.with_name(target.name + ".error.json").read_text())
    status, error = db.execute("select status, error from ops.file_ledger").fetchone()
    assert status == "quarantined" and reason["status"] == "quarantined"
    assert reason["reason"] == error and "last_name" in error  # the missing required column is named
    assert count(db, "select count(*) from raw.medilink_patients") == 0


def test_a_rescan_loads_nothing_twice(settings, db, tmp_path):
    body = PATIENTS + "General Hospital,Ada,Obi,F,1980-01-02,\r\nGeneral Hospital,Bola,Ade,M,1975-05-06,\r\n"
    drop(tmp_path, INPUT + "patients_2026-11-24.csv", body)
    source_ = source(settings, tmp_path)
    source_.pull(ctx(), None)
    assert source_.pull(ctx(), None).files == ()  # nothing left to take

    # The move failed (or someone put the file back): the same file is found again, and a copy under another name.
    (archived_file,) = [tmp_path / key for key in archived(tmp_path)]
    shutil.copy2(archived_file, tmp_path / INPUT / "patients_2026-11-24.csv")
    shutil.copy2(archived_file, tmp_path / INPUT / "patients_2026-11-24-copy.csv")
    again = source_.pull(ctx(), None)

    assert again.files == (INPUT + "patients_2026-11-24-copy.csv", INPUT + "patients_2026-11-24.csv")
    assert again.rows == 0
    assert count(db, "select count(*) from raw.medilink_patients") == 2
    statuses = db.execute("select key, status from ops.file_ledger order by file_id").fetchall()
    assert statuses == [(INPUT + "patients_2026-11-24.csv", "loaded"),
                        (INPUT + "patients_2026-11-24-copy.csv", "duplicate")]
    assert list((tmp_path / INPUT).iterdir()) == []


def test_a_missing_folder_or_drop_type_is_a_clear_error(settings, tmp_path):
    with pytest.raises(ConnectorError, match="not a folder"):
        source(settings, tmp_path / "not-mounted").pull(ctx(), None)
    with pytest.raises(ConnectorError, match="unknown drop type"):
        source(settings, tmp_path).pull(ctx("no_such_type"), None)
