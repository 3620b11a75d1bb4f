"""Fixtures for the API tests, on a real Postgres:

* `warehouse`: one database per session with three weeks of generated Medilink drops, two quarters of
  generated KH03 workbooks and a few hand-made payer claims and member files loaded through the real ingest and
  built by real dbt (and two runs recorded as the DAGs record them), read only by the tests (session scope: the
  build takes a while);
* `keys`: one API key per role in it, made the way an operator makes them;
* `api` / `call`: the app factory on that database, and a GET with a role's key;
* `app` / `client` and `facilities_mart`: a fresh database holding only a hand-made facility_performance mart,
  for figures written out by hand.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
import uuid
from datetime import date
from pathlib import Path

import psycopg
import pytest

from backend.app import create_app
from backend.auth import create_key
from backend.config import ApiSettings
from elt.devstack.servers import free_port
from tests.conftest import create_database, drop_database

PREFIX = "medical_records/input/"
END = date(2026, 11, 14)
# The Medilink drops the `warehouse` is built from (tests that work out its figures from the CSV bytes use them).
WAREHOUSE_DROPS = {"end_date": END, "days": 21, "seed": 11}

# The published mart's columns, as dbt's enforced contract declares them (dbt/models/analytics). The figures
# put in it by hand test the API's paging, filters and exports; disclosure control is dbt's (and
# tests/backend/test_disclosure_control.py checks what the API serves from marts dbt built).
FACILITY_PERFORMANCE_DDL = """
create schema if not exists analytics;
create table analytics.facility_performance (
    facility_id text, facility_name text, state text, lga text, facility_type text,
    patient_count bigint, medical_record_count bigint, triage_visit_count bigint, urgent_visit_count bigint,
    avg_triage_level numeric, first_visit_date date, last_visit_date date, active_days bigint,
    avg_daily_visits numeric, volume_band text, built_at timestamptz,
    is_patient_count_suppressed boolean not null default false,
    is_medical_record_count_suppressed boolean not null default false,
    is_triage_visit_count_suppressed boolean not null default false,
    is_urgent_visit_count_suppressed boolean not null default false
);
grant usage on schema analytics to api_reader;
grant select on analytics.facility_performance to api_reader;
"""


@pytest.fixture(scope="session")
def warehouse(pg_server_url, s3_endpoint_url, warehouse_template):
    """Settings of a warehouse with every mart built from 21 days of generated drops."""
    import boto3

    from elt.config import Settings
    from elt.demo import generate_medilink_drops
    from elt.pipeline import discover_new_files, ingest_file
    from elt.transform import build

    suffix = uuid.uuid4().hex[:10]
    database, bucket = f"hw_api_{suffix}", f"api-{suffix}"
    url = create_database(pg_server_url, database, template=warehouse_template)
    s3 = boto3.client("s3", endpoint_url=s3_endpoint_url, region_name="us-east-1")
    s3.create_bucket(Bucket=bucket)
    settings = Settings(database_url=url, s3_endpoint_url=s3_endpoint_url, s3_bucket=bucket)
    for name, data in generate_medilink_drops(**WAREHOUSE_DROPS).files.items():
        s3.put_object(Bucket=bucket, Key=PREFIX + name, Body=data)
    # Two quarters of KH03 bed occupancy (generated workbooks), so the /api/v1/beds endpoints have rows too.
    from tests.elt.kh03_fixtures import Kh03Spec, build_kh03

    for name, spec in (("Q1-2020-21", Kh03Spec(period_text="April to June 2020", period_end="June")),
                       ("Q2-2020-21", Kh03Spec())):
        s3.put_object(Bucket=bucket, Key=f"nhs/kh03/Beds-Open-Overnight-Web_File-{name}.xlsx", Body=build_kh03(spec))
    # Hand-made payer claims and eligibility (tests/backend/claims_files.py), so the /api/v1/claims endpoints do too.
    from tests.backend.claims_files import FILES as CLAIMS_FILES

    for key, lines in CLAIMS_FILES.items():
        s3.put_object(Bucket=bucket, Key=key, Body=("\n".join(lines) + "\n").encode())
    outcomes = [ingest_file(key, settings=settings) for key in discover_new_files(settings=settings)]
    assert {o.status for o in outcomes} == {"loaded"}
    build(settings=settings)
    # The runs the DAGs would have recorded (ops.pipeline_runs, /api/v1/pipeline-runs): a load, and a marts run that
    # failed on a task.
    from elt.runs import record_run, record_task_failure

    record_run("manual__2026-11-15T02:00:00+00:00", "medilink_ingest", "success", files_loaded=len(outcomes),
               settings=settings)
    record_task_failure("scheduled__2026-11-15T02:00:00+00:00", "claims_marts", "dbt_build",
                        "DbtBuildError at elt/transform.py:1 in build", settings=settings)
    yield settings
    drop_database(pg_server_url, database)


@pytest.fixture(scope="session")
def keys(warehouse) -> dict[str, str]:
    return {role: create_key(warehouse.database_url, f"test {role}", role) for role in ("analyst", "clinician", "admin")}


def api_settings(database_url: str, login_passwords: dict[str, str], **overrides) -> ApiSettings:
    """The API's settings as deployed: on `database_url`'s database, logged in as its own logins (health_api for
    reads, health_api_drops for registering drops), not as the owner in the URL."""
    return ApiSettings(database_url=database_url, db_password=login_passwords["api_db_password"],
                       drops_db_password=login_passwords["api_drops_db_password"], **overrides)


def serve_api(env: dict[str, str], log: Path) -> tuple[subprocess.Popen, int]:
    """The API as ./start.sh and the image start it (`python -m backend.serve`: granian with the settings in `env`),
    on a free loopback port, once it answers /health. Its output (server log, access log, the app's log) goes
    to `log`; the caller stops it."""
    port = free_port()
    with log.open("w") as out:
        server = subprocess.Popen([sys.executable, "-m", "backend.serve", "--host", "127.0.0.1", "--port", str(port)],
                                  env={**os.environ, **env}, cwd=Path(__file__).resolve().parents[2],
                                  stdout=out, stderr=subprocess.STDOUT)
    for _ in range(300):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5):
                return server, port
        except OSError:
            if server.poll() is not None:
                break
            time.sleep(0.1)
    stop_api(server)
    raise AssertionError("the API did not answer: " + log.read_text()[-2000:])


def stop_api(server: subprocess.Popen) -> None:
    """SIGTERM, as a deployment stops it; if it has not exited within a minute (a test that failed with a client
    still attached), kill it and its workers, so that no server outlives the test."""
    import psutil

    server.terminate()
    try:
        server.wait(timeout=60)
    except subprocess.TimeoutExpired:
        for process in [*psutil.Process(server.pid).children(recursive=True), psutil.Process(server.pid)]:
            process.kill()
        server.wait(timeout=30)


@pytest.fixture(scope="session")
def api(warehouse, dbt_manifest, login_passwords):
    return create_app(api_settings(warehouse.database_url, login_passwords, max_page_size=50, default_page_size=20,
                                   rate_limit="", auth_failure_limit=""))
    # tests call far more often than a client may, and fail to authenticate on purpose: no limits


@pytest.fixture
def call(api, keys):
    """GET `path` as `role` (None: without a key)."""
    client = api.test_client()

    def get(path: str, role: str | None = "admin", **kwargs):
        headers = kwargs.pop("headers", {})
        if role:
            headers = {"Authorization": f"Bearer {keys[role]}", **headers}
        return client.get(path, headers=headers, **kwargs)

    return get


@pytest.fixture
def wdb(warehouse):
    """An autocommit connection to the built warehouse, as its owner: what the tests compare the API with."""
    with psycopg.connect(warehouse.database_url, autocommit=True) as conn:
        yield conn


def required_values(wdb, resource) -> list[dict[str, str]]:
    """Every combination of the resource's required filters (Column.required, e.g. one member's claim lines) that
    occurs in its mart, the one with the most rows first: what a client must send with each request. [{}] when it
    requires none."""
    from psycopg import sql

    names = [c.name for c in resource.columns if c.required]
    if not names:
        return [{}]
    query = sql.SQL("select {c} from {t} group by {c} order by count(*) desc, {c}").format(
        c=sql.SQL(", ").join(map(sql.Identifier, names)), t=sql.Identifier(*resource.table.split(".")))
    return [dict(zip(names, map(str, row), strict=True)) for row in wdb.execute(query)]


def path_values(wdb, resource) -> dict[str, str]:
    """Values for the `{column}`s of the resource's path, read from one row of its mart (the first by its key), so
    that the path names rows that exist: one organisation's history, one claim's explanation."""
    from psycopg import sql

    from backend.api.catalogue import VALUE

    names = VALUE.findall(resource.path)
    if not names:
        return {}
    query = sql.SQL("select {c} from {t} order by {k} limit 1").format(
        c=sql.SQL(", ").join(map(sql.Identifier, names)), t=sql.Identifier(*resource.table.split(".")),
        k=sql.SQL(", ").join(map(sql.Identifier, resource.key)))
    return dict(zip(names, map(str, wdb.execute(query).fetchone()), strict=True))


@pytest.fixture
def app(settings, login_passwords):
    return create_app(api_settings(settings.database_url, login_passwords, max_page_size=50, default_page_size=2))


@pytest.fixture
def client(app, settings):
    """A test client that sends an analyst key."""
    key = create_key(settings.database_url, "hand-made mart tests", "analyst")
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {key}"
    return client


@pytest.fixture
def facilities_mart(db):
    """Five facilities with known figures."""
    db.execute(FACILITY_PERFORMANCE_DDL)
    rows = [
        ("f1", "Aminu Kano Teaching Hospital", "Kano", "Tarauni", "Teaching Hospital", 30, 12, 80, 20, 2.9, 58, "High"),
        ("f2", "General Hospital Ikeja", "Lagos", "Ikeja", "Hospital", 25, 10, 40, 8, 3.1, 40, "Medium"),
        ("f3", "Primary Health Center Nassarawa", "Kano", "Nassarawa", "Primary Health Center", 10, 3, 5, 1, 3.6, 5, "Low"),
        ("f4", "Clinique Sainte-Thérèse Ikeja", "Lagos", "Ikeja", "Clinic", 8, 2, 0, 0, None, 0, "Low"),
        ("f5", "National Hospital Abuja", "FCT", "Abuja Municipal", "Hospital", 20, 9, 12, 6, 2.5, 12, "Medium"),
    ]
    for fid, name, state, lga, ftype, patients, records, visits, urgent, avg, days, band in rows:
        db.execute(
            "insert into analytics.facility_performance values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, "
            "'2026-11-01', '2026-11-14', %s, case when %s > 0 then round(%s::numeric / %s, 2) end, %s, "
            "'2026-11-15T02:10:00Z')",
            (fid, name, state, lga, ftype, patients, records, visits, urgent, avg, days, days, visits, days or 1, band),
        )
    return rows
