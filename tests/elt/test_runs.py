"""Failed load attempts leave their reason on the ledger; runs are recorded where the API can read them."""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

import elt.pipeline
from elt.pipeline import ingest_file
from elt.runs import is_transient, is_transient_message, record_run, record_task_failure

PREFIX = "medical_records/input/"


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (psycopg.OperationalError("server closed the connection unexpectedly"), True),
        (EndpointConnectionError(endpoint_url="http://127.0.0.1:9"), True),
        (TimeoutError(), True),
        (ValueError("unknown drop type 'x'"), False),
        (psycopg.errors.UndefinedTable("relation raw.x does not exist"), False),
        (ClientError({"Error": {"Code": "InternalError"}, "ResponseMetadata": {"HTTPStatusCode": 500}}, "CopyObject"),
         True),
        (ClientError({"Error": {"Code": "AccessDenied"}, "ResponseMetadata": {"HTTPStatusCode": 403}}, "CopyObject"),
         False),
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
    # The class, a connection failure's own words (they are about the network, never a row) and where it surfaced.
    assert error.startswith("load attempt failed (transient, will be retried): OperationalError, server closed the "
                            "connection unexpectedly, raised at elt/pipeline.py:")
    assert error.endswith(" in _decide")  # where the load calls write_rejects
    assert db.execute("select count(*) from raw.medilink_facilities").fetchone()[0] == 0
    assert store.exists(key) and list(store.list("medical_records/archive/")) == []

    monkeypatch.undo()
    outcome = ingest_file(key, settings=settings)
    assert outcome.status == "loaded"
    assert db.execute("select status, error from ops.file_ledger").fetchone() == ("loaded", None)
    assert [o.key for o in store.list("medical_records/archive/")] == [outcome.moved_to]


def test_runs_are_recorded_once_per_dag_and_run_id(settings, db):
    started = datetime(2026, 11, 25, 2, 0, tzinfo=UTC)
    record_run("scheduled__1", "medilink_ingest", "running", started_at=started, files_loaded=4, settings=settings)
    record_run("scheduled__1", "medilink_marts", "success", started_at=started, settings=settings)  # same run id
    record_run("scheduled__1", "medilink_ingest", "success", started_at=started, settings=settings)
    assert db.execute("select dag_id, run_id, state, started_at, files_loaded, detail, failed_tasks, "
                      "finished_at >= started_at from ops.pipeline_runs order by dag_id").fetchall() == [
        ("medilink_ingest", "scheduled__1", "success", started, 4, None, [], True),
        ("medilink_marts", "scheduled__1", "success", started, None, None, [], True)]


def test_a_failed_run_names_each_failed_task_and_the_first_reason(settings, db):
    record_task_failure("manual__2", "medilink_marts", "dbt.stg_medilink__facilities.test",
                        "AirflowFailException: accepted_values failed", settings=settings)
    record_task_failure("manual__2", "medilink_marts", "dbt.dim_patients.test", "AirflowFailException: unique",
                        settings=settings)
    record_task_failure("manual__2", "medilink_marts", "dbt.dim_patients.test", "again", settings=settings)
    record_run("manual__2", "medilink_marts", "failed", detail="run failed (task_failure)", settings=settings)
    assert db.execute("select state, failed_tasks, detail from ops.pipeline_runs").fetchone() == (
        "failed", ["dbt.stg_medilink__facilities.test", "dbt.dim_patients.test"],
        "dbt.stg_medilink__facilities.test: AirflowFailException: accepted_values failed")
    # The failed tasks are cleared and re-run, and the run ends well: the record says so.
    record_run("manual__2", "medilink_marts", "success", settings=settings)
    assert db.execute("select state, failed_tasks, detail from ops.pipeline_runs").fetchone() == ("success", [], None)


@pytest.mark.parametrize(
    ("message", "transient"),
    [
        ("dbt invocation did not complete with unhandled error: could not connect to server: Connection refused", True),
        ("Database Error in model dim_facilities: server closed the connection unexpectedly", True),
        ("FATAL: the database system is starting up", True),
        ('Database Error in model dim_facilities: column "stat" does not exist', False),
        ("Got 1 result, configured to fail if != 0", False),
    ],
)
def test_dbt_errors_that_read_as_a_lost_connection_are_transient(message, transient):
    assert is_transient_message(message) is transient


def test_a_warehouse_from_before_the_split_gets_the_two_part_run_key(settings, db):
    from elt.warehouse.schema import apply_ops_schema

    db.execute("drop table ops.pipeline_runs")
    db.execute("create table ops.pipeline_runs (run_id text primary key, dag_id text not null, state text not null, "
               "started_at timestamptz not null default now(), finished_at timestamptz, files_loaded integer, "
               "detail text)")
    db.execute("insert into ops.pipeline_runs (run_id, dag_id, state) values ('scheduled__1', 'medilink_daily', 'success')")
    apply_ops_schema(db)
    apply_ops_schema(db)  # and again: idempotent
    key = db.execute("select array_agg(a.attname order by k.ord) from pg_constraint c "
                     "cross join unnest(c.conkey) with ordinality as k(attnum, ord) "
                     "join pg_attribute a on a.attrelid = c.conrelid and a.attnum = k.attnum "
                     "where c.conrelid = 'ops.pipeline_runs'::regclass and c.contype = 'p'").fetchone()[0]
    assert key == ["dag_id", "run_id"]
    record_run("scheduled__1", "medilink_marts", "success", settings=settings)
    assert db.execute("select dag_id, failed_tasks from ops.pipeline_runs order by dag_id").fetchall() == [
        ("medilink_daily", []), ("medilink_marts", [])]
