"""One bad file never keeps the good ones from the marts, and the run still shows it (issue 13, defect 4).

`medilink_ingest` under dag.test(), with good files beside bad ones:

* files that used to make the load raise (CR-only line ends, a header field over the csv module's limit, a
  first line of megabytes): now read, or quarantined with the reason; the run publishes the good files;
* a load that fails on an error the loader did not expect: its file is quarantined (it would otherwise fail
  every night), `publish` still emits the `medilink_raw` asset for the files that loaded, and the run ends
  failed, naming the failed load in ops.pipeline_runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

PREFIX = "medical_records/input/"
DAGS = Path(__file__).resolve().parents[2] / "airflow" / "dags"
FACILITIES = b"name,state,lga,lat,lon,type\nGeneral Hospital,LAGOS,Ikeja,6.6018,3.3515,Hospital\n"
PATIENT_HEADER = "facility_name,first_name,last_name,sex,dob,phone"
PATIENT_ROWS = ["General Hospital,Ada,Obi,F,1990-01-01,+2348012345678", "General Hospital,Bola,Ade,M,1985-06-30,"]


@pytest.fixture
def ingest(settings, airflow_home, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    monkeypatch.setenv("S3_ENDPOINT_URL", settings.s3_endpoint_url)
    monkeypatch.setenv("S3_BUCKET", settings.s3_bucket)
    from airflow.dag_processing.dagbag import DagBag

    from elt.config import get_settings

    get_settings.cache_clear()
    yield DagBag(str(DAGS)).dags["medilink_ingest"]
    get_settings.cache_clear()


def asset_events() -> int:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import func, select

    with create_session() as session:
        return session.scalar(select(func.count()).select_from(AssetEvent).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
                              .where(AssetModel.uri == "warehouse://raw/medilink"))


def landing(store) -> list[str]:
    return sorted(obj.key for obj in store.list(PREFIX))


def ledger(db) -> dict[str, tuple[str, str | None]]:
    rows = db.execute("select key, status, split_part(error, ':', 1) from ops.file_ledger").fetchall()
    return {key.removeprefix(PREFIX): (status, rule or None) for key, status, rule in rows}


@pytest.mark.e2e
def test_files_that_used_to_fail_their_load_are_read_or_quarantined_and_the_good_ones_published(ingest, store, db):
    files = {
        "facilities_2026-11-14.csv": FACILITIES,
        # old Mac Excel: lone CR line ends, which COPY reads
        "patients_2026-11-14.csv": "".join(f"{line}\r" for line in [PATIENT_HEADER, *PATIENT_ROWS]).encode(),
        # a header field of 200 KB: over the csv module's 128 KiB field limit
        "patients_2026-11-15.csv": ("\n".join([PATIENT_HEADER + "x" * 200_000, *PATIENT_ROWS]) + "\n").encode(),
        # a first line of 3 MB without a line end
        "patients_2026-11-16.csv": b"facility_name," + b"y" * (3 * 1024 * 1024),
    }
    for name, data in files.items():
        store.put(PREFIX + name, data)
    before = asset_events()

    run = ingest.test()

    assert run.state == "success"
    assert asset_events() == before + 1  # the loaded files are published: medilink_marts rebuilds
    assert ledger(db) == {
        "facilities_2026-11-14.csv": ("loaded", None),
        "patients_2026-11-14.csv": ("loaded", None),
        "patients_2026-11-15.csv": ("quarantined", "unexpected_columns"),
        "patients_2026-11-16.csv": ("quarantined", "header_too_long"),
    }
    assert db.execute("select first_name from raw.medilink_patients__valid order by 1").fetchall() == [("Ada",), ("Bola",)]
    assert landing(store) == []  # nothing waits to fail again tomorrow
    for name in ("patients_2026-11-15.csv", "patients_2026-11-16.csv"):
        (moved,) = [o.key for o in store.list("medical_records/quarantine/") if o.key.endswith(name)]
        assert store.read(moved) == files[name]
        assert json.loads(store.read(moved + ".error.json"))["rule"] == ledger(db)[name][1]


@pytest.mark.e2e
def test_a_load_that_fails_unexpectedly_is_quarantined_the_rest_published_and_the_run_failed(
        ingest, store, db, monkeypatch):
    import elt.warehouse.loader as loader

    real_map_header = loader.map_header

    def trips_over_patients(contract, header_line, **kwargs):
        if contract.drop_type == "medilink_patients":  # a reader bug that this one file triggers
            raise IndexError("list index out of range while reading Ada Obi, 1990-01-01")
        return real_map_header(contract, header_line, **kwargs)

    monkeypatch.setattr(loader, "map_header", trips_over_patients)
    store.put(PREFIX + "facilities_2026-11-14.csv", FACILITIES)
    store.put(PREFIX + "patients_2026-11-14.csv", ("\n".join([PATIENT_HEADER, *PATIENT_ROWS]) + "\n").encode())
    before = asset_events()

    run = ingest.test()

    states = {(ti.task_id, ti.map_index): ti.state for ti in run.get_task_instances()}
    # keys are loaded in sorted order: facilities is load[0], patients load[1]
    assert states == {("discover", -1): "success", ("load", 0): "success", ("load", 1): "failed",
                      ("publish", -1): "success", ("all_loads_succeeded", -1): "upstream_failed"}
    assert run.state == "failed"
    assert asset_events() == before + 1  # the facilities file is published all the same
    assert ledger(db) == {"facilities_2026-11-14.csv": ("loaded", None), "patients_2026-11-14.csv": ("quarantined", "load_error")}
    assert landing(store) == []
    state, failed_tasks, detail = db.execute(
        "select state, failed_tasks, detail from ops.pipeline_runs where run_id = %s", (run.run_id,)).fetchone()
    assert (state, failed_tasks) == ("failed", ["load[1]"])
    assert "load_error" in detail and "IndexError" in detail
    assert "Ada" not in detail and "1990-01-01" not in detail
