"""Failed load attempts leave their reason on the ledger; runs are recorded where the API can read them."""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg
import pytest
from botocore.exceptions import EndpointConnectionError

import elt.pipeline
from elt.pipeline import ingest_file
from elt.runs import is_transient, record_run

PREFIX = "medical_records/input/"


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (psycopg.OperationalError("server closed the connection unexpectedly"), True),
        (EndpointConnectionError(endpoint_url="http://127.0.0.1:9"), True),
        (TimeoutError(), True),
        (ValueError("unknown drop type 'x'"), False),
        (psycopg.errors.UndefinedTable("relation raw.x does not exist"), False),
    ],
)
def test_only_connection_and_timeout_failures_are_worth_a_retry(error, transient):
    assert is_transient(error) is transient


def test_a_wrapped_transient_failure_is_still_transient():
    try:
        try:
            raise psycopg.OperationalError("terminating connection due to administrator command")
        except psycopg.OperationalError as inner:
            raise RuntimeError("load failed") from inner
    except RuntimeError as outer:
        assert is_transient(outer)


def test_a_failed_attempt_is_noted_on_the_ledger_and_the_retry_loads_the_file(settings, store, db, monkeypatch):
    key = PREFIX + "facilities.csv"
    store.put(key, b"name,state,lga,lat,lon,type\nA,LAGOS,Ikeja,6.6,3.3,Clinic\n")

    def database_goes_away(*args, **kwargs):
        raise psycopg.OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(elt.pipeline, "write_rejects", database_goes_away)
    with pytest.raises(psycopg.OperationalError):
        ingest_file(key, settings=settings)
    status, error = db.execute("select status, error from ops.file_ledger").fetchone()
    assert status == "discovered"
    assert error == ("load attempt failed (transient, will be retried): OperationalError: "
                     "server closed the connection unexpectedly")
    assert db.execute("select count(*) from raw.medilink_facilities").fetchone()[0] == 0
    assert store.exists(key) and list(store.list("medical_records/archive/")) == []

    monkeypatch.undo()
    outcome = ingest_file(key, settings=settings)
    assert outcome.status == "loaded"
    assert db.execute("select status, error from ops.file_ledger").fetchone() == ("loaded", None)
    assert [o.key for o in store.list("medical_records/archive/")] == [outcome.moved_to]


def test_runs_are_recorded_once_per_run_id(settings, db):
    started = datetime(2026, 11, 25, 2, 0, tzinfo=UTC)
    record_run("manual__1", "medilink_daily", "failed", started_at=started, files_loaded=3,
               detail="failed: build_marts", settings=settings)
    record_run("manual__1", "medilink_daily", "success", started_at=started, files_loaded=4, settings=settings)
    assert db.execute("select run_id, dag_id, state, started_at, files_loaded, detail, finished_at >= started_at "
                      "from ops.pipeline_runs").fetchall() == [
        ("manual__1", "medilink_daily", "success", started, 4, None, True)]
