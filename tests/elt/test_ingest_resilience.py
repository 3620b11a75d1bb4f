"""Crashes mid-load leave nothing partial, and the next run loads each file exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psycopg
import pytest

from elt.config import Settings
from elt.pipeline import discover_new_files, ingest_file
from tests.conftest import create_database, embedded_postgres

PREFIX = "medical_records/input/"
HEADER = b"facility_name,patient_first_name,patient_last_name,triage_level,chief_complaint,vital_signs,conditions,recommendations\n"


def big_triage_file(rows: int, tag: str = "") -> bytes:
    line = f"General Hospital Ikeja,Ada{tag},Obi,3,Fever and chills,BP: 120/80,Malaria;Anaemia,Rest and fluids\n".encode()
    return HEADER + line * rows


def start_loader(settings: Settings, key: str) -> subprocess.Popen:
    env = {**os.environ, "DATABASE_URL": settings.database_url, "S3_ENDPOINT_URL": settings.s3_endpoint_url,
           "S3_BUCKET": settings.s3_bucket}
    code = f"from elt.pipeline import ingest_file; ingest_file({key!r})"
    return subprocess.Popen([sys.executable, "-c", code], env=env, start_new_session=True)


def wait_until_copying(database_url: str, loader: subprocess.Popen, timeout: float = 60) -> int:
    """Block until a COPY into the stage has processed some rows; returns how many."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(database_url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            assert loader.poll() is None, "the loader finished before it could be interrupted; use a bigger file"
            row = conn.execute("select tuples_processed from pg_stat_progress_copy where datname = current_database()").fetchone()
            if row and row[0] > 0:
                return row[0]
            time.sleep(0.02)
    raise TimeoutError("the loader never started its COPY")


def wait_for_backends_to_go(database_url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    with psycopg.connect(database_url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            if not conn.execute("select count(*) from pg_stat_activity where application_name = 'elt'").fetchone()[0]:
                return
            time.sleep(0.1)
    raise TimeoutError("the killed loader's backend is still there")


def test_loader_killed_mid_copy_leaves_nothing_and_the_rerun_loads_once(settings, store, db):
    rows = 400_000
    store.put(PREFIX + "triage_visits_2026-11-01.csv", big_triage_file(rows))
    loader = start_loader(settings, PREFIX + "triage_visits_2026-11-01.csv")
    copied = wait_until_copying(settings.database_url, loader)
    os.killpg(loader.pid, signal.SIGKILL)
    loader.wait()
    wait_for_backends_to_go(settings.database_url)

    assert 0 < copied < rows
    assert db.execute("select count(*) from raw.medilink_triage_visits").fetchone()[0] == 0
    assert db.execute("select count(*) from ops.load_rejects").fetchone()[0] == 0
    assert db.execute("select status from ops.file_ledger").fetchall() == [("discovered",)]
    assert store.exists(PREFIX + "triage_visits_2026-11-01.csv")  # not archived: it was never loaded

    outcome = ingest_file(PREFIX + "triage_visits_2026-11-01.csv", settings=settings)
    assert (outcome.status, outcome.rows_loaded) == ("loaded", rows)
    assert db.execute("select count(*), count(distinct _row_number) from raw.medilink_triage_visits").fetchone() == (rows, rows)
    # The killed run's early archive copy went to the target the re-run reused: one archived object.
    assert [o.key for o in store.list("medical_records/archive/")] == [outcome.moved_to]
    with pytest.raises(ValueError, match="must match exactly one drop contract"):
        ingest_file(outcome.moved_to, settings=settings)  # archived keys are never loaded again


def test_postgres_crash_during_a_run_then_the_retried_run_loads_every_file_once(tmp_path, s3_endpoint_url, store, warehouse_template, settings):
    from elt.pipeline import prepare

    with embedded_postgres(tmp_path) as server:  # the whole cluster is thrown away afterwards
        database_url = create_database(server.url("postgres"), "warehouse")
        crashing = Settings(database_url=database_url, s3_endpoint_url=s3_endpoint_url, s3_bucket=settings.s3_bucket)
        prepare(crashing)
        small = {f"triage_visits_2026-11-0{day}.csv": big_triage_file(10, tag=str(day)) for day in (1, 2)}
        for name, data in small.items():
            store.put(PREFIX + name, data)
        store.put(PREFIX + "triage_visits_2026-11-03.csv", big_triage_file(400_000, tag="3"))
        assert ingest_file(PREFIX + "triage_visits_2026-11-01.csv", settings=crashing).status == "loaded"

        loader = start_loader(crashing, PREFIX + "triage_visits_2026-11-03.csv")
        wait_until_copying(database_url, loader)
        server.kill()  # power cut in the middle of the third file's COPY
        assert loader.wait(60) != 0  # the run fails loudly; Airflow would retry it
        server.start()  # crash recovery

        outcomes = {key: ingest_file(key, settings=crashing) for key in discover_new_files("medilink", settings=crashing)}
        assert {key.rsplit("/", 1)[1]: o.status for key, o in outcomes.items()} == {
            "triage_visits_2026-11-02.csv": "loaded", "triage_visits_2026-11-03.csv": "loaded"}
        with psycopg.connect(database_url) as conn:
            per_file = conn.execute(
                "select ledger.key, count(raw._row_number) from ops.file_ledger as ledger "
                "left join raw.medilink_triage_visits as raw on raw._file_id = ledger.file_id "
                "group by ledger.key order by ledger.key"
            ).fetchall()
            statuses = conn.execute("select status, count(*) from ops.file_ledger group by 1").fetchall()
        assert [n for _, n in per_file] == [10, 10, 400_000]
        assert statuses == [("loaded", 3)]


def test_listing_follows_pagination_past_a_thousand_keys(settings, store):
    client, bucket = store.client, store.bucket
    for index in range(1_500):
        client.put_object(Bucket=bucket, Key=f"{PREFIX}{index:04d}/facilities.csv", Body=b"x")
    keys = discover_new_files("medilink", settings=settings)
    assert len(keys) == 1_500 and len(set(keys)) == 1_500


def test_a_put_that_must_not_overwrite_is_refused_by_s3_itself(store):
    from elt.storage.s3 import ObjectExists

    store.put(PREFIX + "facilities.csv", b"first", only_if_absent=True)
    with pytest.raises(ObjectExists):
        store.put(PREFIX + "facilities.csv", b"second", only_if_absent=True)
    assert store.read(PREFIX + "facilities.csv") == b"first"
    store.put(PREFIX + "facilities.csv", b"third")  # an ordinary put still replaces
    assert store.read(PREFIX + "facilities.csv") == b"third"
