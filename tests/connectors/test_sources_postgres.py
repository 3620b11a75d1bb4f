"""The postgres source against a second database in the embedded Postgres (the clinic's system) and the real S3
endpoint: what it pulls lands through the ledger and the rejects like any drop, once."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from elt.connectors.base import ConnectorError, Credentials, RunContext
from elt.connectors.sources import postgres
from tests.conftest import create_database, drop_database

T0 = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)
CLAIM_COLUMNS = ("claim_id", "member_id", "provider_id", "claim_date", "service_from_date", "service_to_date",
                 "diagnosis_code", "procedure_code", "billed_amount", "allowed_amount", "paid_amount",
                 "claim_status", "claim_type")


@pytest.fixture
def clinic(pg_server_url, monkeypatch):
    """A clinic database beside the warehouse, reachable through an Airflow-style connection variable."""
    name = f"clinic_{uuid.uuid4().hex[:10]}"
    url = create_database(pg_server_url, name)
    monkeypatch.setenv("AIRFLOW_CONN_CLINIC_TEST", url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("create table patients (patient_id integer primary key, facility_name text, first_name text, "
                     "last_name text, sex text, dob date, phone text, updated_at timestamptz not null)")
        conn.execute(f"create table claims (id integer primary key, {', '.join(f'{c} text' for c in CLAIM_COLUMNS)}, "
                     "updated_at timestamptz not null)")
        yield conn
    drop_database(pg_server_url, name)


def ctx(drop_type: str, connector: str = "clinic_pull") -> RunContext:
    return RunContext(connector=connector, run_key=f"{connector}-run", as_of=None,
                      started_at=datetime(2026, 12, 6, 2, 0, tzinfo=UTC), drop_type=drop_type)


def patients_source(settings, **options):
    return postgres.open(postgres.Options(kind="postgres", credentials=Credentials(conn_id="clinic_test"),
                                          table="patients", cursor_column="updated_at", key=["patient_id"],
                                          **options), settings)


def claims_source(settings, **options):
    return postgres.open(postgres.Options(kind="postgres", credentials=Credentials(conn_id="clinic_test"),
                                          table="public.claims", cursor_column="updated_at", key=["id"],
                                          fields={"payer": "clinic_ehr"}, **options), settings)


def add_patients(conn, count: int, *, first_id: int = 1) -> list[tuple]:
    rows = [(i, "General Hospital", f"First{i}", f"Last{i}", "M" if i % 2 else "F", f"19{50 + i % 40}-03-0{1 + i % 9}",
             f"0803000{i:04d}", T0 + timedelta(minutes=i)) for i in range(first_id, first_id + count)]
    with conn.cursor() as cur:
        cur.executemany("insert into patients values (%s, %s, %s, %s, %s, %s, %s, %s)", rows)
    return rows


def claim(i: int, updated_at: datetime, billed: str = "100.00") -> tuple:
    return (i, f"C{i:05d}", f"M{i % 7}", "1234567893", "2026-10-01", "2026-09-20", "2026-09-21", "E11.9", "99213",
            billed, "80.00", "60.00", "paid", "professional", updated_at)


def add_claims(conn, rows: list[tuple]) -> None:
    with conn.cursor() as cur:
        cur.executemany("insert into claims values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)", rows)


def count(db, query: str, *params) -> int:
    return db.execute(query, params).fetchone()[0]


def file_id(db, key: str) -> int:
    return count(db, "select file_id from ops.file_ledger where key = %s", key)


def test_first_pull_lands_every_row_through_the_ledger_with_rejects(settings, store, db, clinic):
    rows = add_patients(clinic, 30)
    clinic.execute("update patients set sex = 'X' where patient_id = 7")  # the contract allows M and F only

    pulled = patients_source(settings).pull(ctx("medilink_patients"), None)

    (key,) = pulled.files
    assert key.startswith("medical_records/input/patients_clinicpull_all_") and key.endswith(".csv")
    assert pulled.rows == 30
    assert pulled.cursor_after == max(row[-1] for row in rows).isoformat()
    assert count(db, "select count(*) from raw.medilink_patients") == 30
    status, loaded, rejected = db.execute(
        "select status, rows_loaded, rows_rejected from ops.file_ledger where key = %s", (key,)).fetchone()
    assert (status, loaded, rejected) == ("loaded", 29, 1)
    # Rows are written in cursor order: patient 7 changed at T0 + 7 min is the file's 7th row.
    assert db.execute("select file_id, row_number, column_name, rule from ops.load_rejects").fetchall() == [
        (file_id(db, key), 7, "sex", "allowed")]
    assert db.execute("select first_name, dob from raw.medilink_patients where _row_number = 3").fetchone() == (
        "First3", "1953-03-04")
    assert not list(store.list("medical_records/input/"))  # archived, as any drop
    assert [obj.key for obj in store.list("medical_records/archive/")] != []


def test_a_changed_cursor_pulls_only_new_and_late_rows(settings, db, clinic):
    first = [claim(i, T0 + timedelta(hours=i)) for i in range(1, 11)]
    add_claims(clinic, first)
    source = claims_source(settings, lag=timedelta(hours=1))
    one = source.pull(ctx("claims"), None)
    assert one.rows == 10 and one.cursor_after == (T0 + timedelta(hours=10)).isoformat()

    # After the first pull: three new claims, one committed late with a cursor half an hour before the last pulled
    # (within the lag), one changed long before (outside it: not pulled, as the lag says).
    late, old = claim(11, T0 + timedelta(hours=9, minutes=30)), claim(12, T0 + timedelta(hours=2))
    new = [claim(i, T0 + timedelta(hours=i)) for i in range(13, 16)]
    add_claims(clinic, [late, old, *new])
    source_rows = [*first, late, old, *new]
    last = datetime.fromisoformat(one.cursor_after)
    expected = sorted(row[1] for row in source_rows if row[-1] > last - timedelta(hours=1))
    assert expected == ["C00010", "C00011", "C00013", "C00014", "C00015"]  # the window, said out loud

    two = source.pull(ctx("claims"), one.cursor_after)

    (key,) = two.files
    assert key.startswith("claims/provider=clinic_ehr/year=2026/month=12/claims_clinicpull_")
    assert two.rows == len(expected)
    assert two.cursor_after == (T0 + timedelta(hours=15)).isoformat()
    pulled = db.execute("select claim_id from raw.claims where _file_id = %s order by claim_id",
                        (file_id(db, key),)).fetchall()
    assert [row[0] for row in pulled] == expected
    assert count(db, "select count(*) from raw.claims") == 10 + len(expected)


def test_a_repull_with_the_same_cursor_loads_nothing_twice(settings, db, store, clinic):
    add_claims(clinic, [claim(i, T0 + timedelta(hours=i)) for i in range(1, 6)])
    source = claims_source(settings)
    first = source.pull(ctx("claims"), None)
    again = source.pull(ctx("claims"), None)
    since = source.pull(ctx("claims"), first.cursor_after)  # nothing past the cursor

    assert again.files == first.files and again.sha256 == first.sha256
    assert count(db, "select count(*) from raw.claims") == 5
    assert db.execute("select status, rows_loaded from ops.file_ledger").fetchall() == [("loaded", 5)]
    assert (since.files, since.rows, since.cursor_after) == ((), 0, first.cursor_after)


def test_a_snapshot_drop_type_is_pulled_whole_and_the_same_snapshot_loads_once(settings, db, clinic):
    """medilink_patients files replace each other per day: a delta would hide the day's earlier rows."""
    add_patients(clinic, 12)
    source = patients_source(settings)
    first = source.pull(ctx("medilink_patients"), None)
    same = source.pull(ctx("medilink_patients"), first.cursor_after)
    add_patients(clinic, 3, first_id=13)
    grown = source.pull(ctx("medilink_patients"), same.cursor_after)

    assert same.rows == 12 and grown.rows == 15
    statuses = db.execute("select key, status from ops.file_ledger order by file_id").fetchall()
    assert [status for _, status in statuses] == ["superseded", "loaded"]
    assert count(db, "select count(*) from raw.medilink_patients where _file_id = %s",
                 file_id(db, grown.files[0])) == 15


def test_a_pull_killed_mid_stream_leaves_nothing_and_the_rerun_completes(settings, db, store, clinic, monkeypatch):
    add_claims(clinic, [claim(i, T0 + timedelta(minutes=i)) for i in range(1, 201)])
    source = claims_source(settings, batch_rows=20)
    written = []

    def kill(rows: int) -> None:
        written.append(rows)
        if rows >= 100:
            raise RuntimeError("killed")

    monkeypatch.setattr(postgres, "batch_hook", kill)
    with pytest.raises(RuntimeError, match="killed"):
        source.pull(ctx("claims"), None)
    assert written[-1] == 100  # it died half-way through the stream
    assert list(store.list("")) == []
    assert count(db, "select count(*) from ops.file_ledger") == 0
    assert count(db, "select count(*) from raw.claims") == 0

    monkeypatch.setattr(postgres, "batch_hook", None)
    rerun = source.pull(ctx("claims"), None)
    assert rerun.rows == 200
    assert count(db, "select count(*) from raw.claims") == 200
    assert count(db, "select count(distinct claim_id) from raw.claims") == 200


def test_a_file_an_earlier_pull_landed_but_did_not_ingest_is_ingested_first(settings, db, store, clinic):
    """An earlier pull died between the upload and the ingest: its file is ingested before the new one lands."""
    header = "ClaimID,MemberID,ProviderNPI,ClaimDate,ServiceFromDate,ServiceToDate,DiagnosisCode,ProcedureCode," \
             "BilledAmount,AllowedAmount,PaidAmount,Status,Type\n"
    left = "claims/provider=clinic_ehr/year=2026/month=11/claims_clinicpull_all_1.csv"
    store.put(left, (header + "C09999,M1,1234567893,2026-10-01,2026-09-20,2026-09-21,E11.9,99213,10,8,6,paid,"
                     "professional\n").encode())
    add_claims(clinic, [claim(1, T0)])

    pulled = claims_source(settings).pull(ctx("claims"), None)

    assert pulled.files[0] == left and len(pulled.files) == 2
    assert db.execute("select key, status from ops.file_ledger order by file_id").fetchall() == [
        (left, "loaded"), (pulled.files[1], "loaded")]
    assert count(db, "select count(*) from raw.claims") == 2


def test_a_failing_source_says_where_without_values(settings, db, clinic):
    add_patients(clinic, 3)
    source = patients_source(settings, columns={"facility_name": "facility_name", "first_name": "no_such_column"})
    with pytest.raises(ConnectorError) as caught:
        source.pull(ctx("medilink_patients"), None)
    message = str(caught.value)
    assert "clinic_pull" in message and "UndefinedColumn" in message and "First" not in message
    assert count(db, "select count(*) from ops.file_ledger") == 0


def test_options_refuse_what_cannot_work():
    with pytest.raises(ValueError, match="exactly one"):
        postgres.Options(kind="postgres", credentials=Credentials(conn_id="x"), cursor_column="updated_at", key=["id"])
    with pytest.raises(ValueError, match="(?i)extra"):
        postgres.Options(kind="postgres", credentials=Credentials(conn_id="x"), table="t", cursor_column="u",
                         key=["id"], password="secret")


def test_the_demo_clinic_pull_lands_the_demo_patients_with_their_bad_rows(settings, db, pg_server_url, monkeypatch):
    """The stack's clinic database (elt/devstack/clinic.py) pulled by its declaration: every patient, and the demo's
    deliberately broken patient rows in the rejects at their rows, as from the dropped export."""
    import yaml

    from elt.demo import generate_medilink_drops
    from elt.devstack.clinic import create_clinic_ehr

    name = f"clinic_ehr_{uuid.uuid4().hex[:10]}"
    for variable, value in create_clinic_ehr(pg_server_url, database=name).items():
        monkeypatch.setenv(variable, value)
    try:
        declaration = yaml.safe_load((Path(__file__).parents[2] / "airflow/connectors/clinic_ehr_pull.yml").read_text())
        source = postgres.open(postgres.Options(**declaration["pull"]["from"]), settings)
        pulled = source.pull(ctx(declaration["pull"]["drop_type"], declaration["name"]), None)
    finally:
        drop_database(pg_server_url, name)

    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    drop = generate_medilink_drops(end_date=yesterday, seed=42)
    (export,) = [data for key, data in drop.files.items() if key.startswith("patients_")]
    patients = len(export.decode("utf-8-sig").strip().splitlines()) - 1
    bad = sorted((row.row, row.column, row.rule) for row in drop.bad_rows if row.key.startswith("patients_"))
    assert bad  # the demo breaks some patient rows on purpose
    assert pulled.rows == patients
    assert count(db, "select count(*) from raw.medilink_patients") == patients
    assert db.execute("select row_number, column_name, rule from ops.load_rejects order by 1").fetchall() == bad
