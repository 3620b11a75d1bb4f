"""The API's and BI's database logins are boundaries (issue 13, defect 7), on the real Postgres of the suite.

The API logs in as `health_api`, a member of `api_reader` only. Whatever reaches SQL on its connection (an
injection, a bug) cannot get more than that role: `RESET ROLE`, `SET ROLE` to the owner or to another group and
`SET SESSION AUTHORIZATION` leave it without write or superuser rights, even with the read-only default lifted.
BI tools log in as `health_bi` and see the analytics schema only. A dropped file is registered in the ledger as
`health_api_drops`, which can add a `discovered` row and nothing else.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from io import BytesIO

import psycopg
import pytest
from psycopg import errors

from backend.app import create_app
from backend.auth import create_key
from backend.config import ApiSettings
from elt.contracts import load_contracts
from elt.storage.s3 import StoredObject
from elt.warehouse import ledger
from elt.warehouse.roles import API_LOGIN, BI_LOGIN, DROPS_LOGIN
from tests.backend.conftest import api_settings
from tests.backend.fake_airflow import FakeAirflow

OWNER = "postgres"  # the superuser that owns the test warehouse (tests/conftest.py)

# Ways out of the role a connection was given. Each is refused, or leaves the connection as its login: RESET ROLE
# goes back to the role set when it connected (`-c role=api_reader`), SET ROLE NONE to the login itself.
ESCAPES = [
    "reset role",
    "set role none",
    f"set role {OWNER}",
    f"set session authorization {OWNER}",
    "set role warehouse_loader",
    "set role warehouse_transformer",
    "set role drop_registrar",
]

# What an attacker on the connection would do next. Every one must be refused for want of privilege.
FORBIDDEN = [
    # the ledger, the keys, the audit trail
    "insert into ops.file_ledger (bucket, key, drop_type, contract_version, status) values ('b', 'k', 'x', 1, 'loaded')",
    "update ops.file_ledger set status = 'loaded'",
    "delete from ops.file_ledger",
    "insert into ops.api_keys (name, role, key_hash) values ('mine', 'admin', 'x')",
    "update ops.api_keys set role = 'admin'",
    "delete from ops.api_audit",
    "update ops.api_audit set endpoint = 'x'",
    # raw tables: neither written nor read
    "insert into raw.medilink_patients (_file_id, first_name) values (-1, 'x')",
    "update raw.medilink_patients set first_name = 'x'",
    "delete from raw.medilink_patients",
    "select * from raw.medilink_patients",
    "select * from raw.medilink_patients__valid",
    # marts: read, never written
    "update analytics.facility_performance set patient_count = 0",
    "delete from analytics.facility_performance",
    "truncate analytics.facility_performance",
    "delete from core.dim_patients",
    # rejected values may be personal data; the keys' names and the audit trail are not the API's to read
    "select raw_value from ops.load_rejects",
    "select name from ops.api_keys",
    "select * from ops.api_audit",
    # no new objects anywhere, no new roles
    "create table public.escape (i int)",
    "create table analytics.escape (i int)",
    "create table ops.escape (i int)",
    "create schema escape",
    "create role escape login superuser",
    "alter role current_user superuser",
    "drop table analytics.facility_performance",
]


def refused(conn: psycopg.Connection, statement: str) -> bool:
    """Whether Postgres refuses `statement` for want of privilege; whatever it did is rolled back either way."""
    try:
        with conn.transaction(force_rollback=True):
            conn.execute(statement)
    except errors.InsufficientPrivilege:
        return True
    except psycopg.Error:
        return False  # refused for another reason (a constraint, a missing column): not a privilege boundary
    return False


def powers(conn: psycopg.Connection) -> dict[str, object]:
    row = conn.execute(
        "select current_user, session_user, (select rolsuper from pg_roles where rolname = current_user), "
        "(select rolsuper from pg_roles where rolname = session_user), "
        "pg_has_role(session_user, 'warehouse_loader', 'member'), "
        "pg_has_role(session_user, %s, 'member')", (OWNER,)).fetchone()
    return dict(zip(("current_user", "session_user", "current_is_superuser", "session_is_superuser",
                     "in_loader", "in_owner"), row, strict=True))


def try_escape(conn: psycopg.Connection, escape: str) -> bool:
    """Run `escape` for the rest of the session; False when it was refused."""
    try:
        conn.execute(escape)
    except errors.InsufficientPrivilege:
        return False
    return True


@pytest.fixture
def api_connection(api):
    """A connection from the API's own pool, set to autocommit; thrown away afterwards (its session is altered)."""
    raw = api.extensions["engine"].raw_connection()
    conn: psycopg.Connection = raw.driver_connection
    conn.rollback()
    conn.autocommit = True
    yield conn
    raw.invalidate()


@pytest.mark.parametrize("escape", ESCAPES)
def test_no_way_out_of_the_api_role_leads_to_writes_or_superuser_rights(api_connection, escape):
    conn = api_connection
    assert conn.info.user == API_LOGIN.name  # the API logs in as its own login, not as the owner in its URL
    escaped = try_escape(conn, escape)
    assert escaped == (escape in ("reset role", "set role none")), f"{escape!r} was {'allowed' if escaped else 'refused'}"
    conn.execute("set default_transaction_read_only = off")  # as an attacker would, first
    assert powers(conn) == {
        "current_user": API_LOGIN.name if escape == "set role none" else "api_reader", "session_user": API_LOGIN.name,
        "current_is_superuser": False, "session_is_superuser": False, "in_loader": False, "in_owner": False,
    }
    allowed = [statement for statement in FORBIDDEN if not refused(conn, statement)]
    assert allowed == [], f"after {escape!r} the API's connection may still: {allowed}"


def test_the_api_still_reads_and_audits_as_its_own_login(api_connection, call, wdb):
    conn = api_connection
    assert conn.execute("select current_user, session_user").fetchone() == ("api_reader", API_LOGIN.name)
    assert conn.execute("select count(*) from analytics.facility_performance").fetchone()[0] > 0
    assert conn.execute("select count(*) from core.dim_patients").fetchone()[0] > 0
    audited = wdb.execute("select count(*) from ops.api_audit").fetchone()[0]
    assert call("/api/v1/patients?limit=1", role="clinician").status_code == 200
    assert wdb.execute("select count(*) from ops.api_audit").fetchone()[0] == audited + 1


def test_the_bi_login_reads_the_analytics_schema_and_nothing_else(warehouse, login_passwords):
    url = ApiSettings(database_url=warehouse.database_url).login_url(
        BI_LOGIN, _secret(login_passwords[BI_LOGIN.password_setting]))
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute("select current_user").fetchone()[0] == BI_LOGIN.name
        for escape in ESCAPES + ["set role api_reader"]:
            try_escape(conn, escape)
            readable = {schema for (schema,) in conn.execute(
                "select distinct namespace.nspname from pg_class as relation "
                "join pg_namespace as namespace on namespace.oid = relation.relnamespace "
                "where relation.relkind in ('r', 'v', 'm', 'p') and has_table_privilege(relation.oid, 'select') "
                "and namespace.nspname not in ('pg_catalog', 'information_schema')")}
            assert readable == {"analytics"}, f"after {escape!r} BI reads {sorted(readable)}"
            assert conn.execute("select count(*) from analytics.facility_performance").fetchone()[0] > 0
            assert powers(conn)["session_is_superuser"] is False
            allowed = [statement for statement in FORBIDDEN if not refused(conn, statement)]
            assert allowed == [], f"after {escape!r} the BI login may still: {allowed}"


def test_the_drops_login_registers_a_file_and_can_do_nothing_else(settings, login_passwords, db, facilities_mart):
    """On a fresh warehouse holding one hand-made mart (analytics.facility_performance; core is not built)."""
    url = ApiSettings(database_url=settings.database_url).login_url(
        DROPS_LOGIN, _secret(login_passwords[DROPS_LOGIN.password_setting]))
    contract = load_contracts(settings.contracts_dir)["medilink_triage_visits"]
    obj = StoredObject(bucket=settings.s3_bucket, key="medical_records/input/triage_visits_2026-11-14.csv",
                       etag='"e1"', size=10, last_modified=datetime(2026, 11, 14, 8, tzinfo=UTC))
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute("select current_user").fetchone()[0] == DROPS_LOGIN.name
        entry = ledger.register(conn, obj, contract, (date(2026, 11, 14), date(2026, 11, 14)))
        again = ledger.register(conn, obj, contract, (date(2026, 11, 14), date(2026, 11, 14)))
        assert (entry.status, again.file_id) == ("discovered", entry.file_id)
        for escape in ESCAPES:
            try_escape(conn, escape)
            conn.execute("set default_transaction_read_only = off")
            assert powers(conn)["session_is_superuser"] is False
            allowed = [statement for statement in FORBIDDEN + [
                "select error, sha256 from ops.file_ledger", "select * from analytics.facility_performance",
                "select key_hash from ops.api_keys",
            ] if "core." not in statement and not refused(conn, statement)]
            assert allowed == [], f"after {escape!r} the drops login may still: {allowed}"
    assert db.execute("select file_id, status, key from ops.file_ledger").fetchall() == [
        (entry.file_id, "discovered", obj.key)]


def test_an_upload_is_registered_with_the_drops_login_not_the_owner(settings, login_passwords, store, db):
    """With a wrong password for the drops login the ledger cannot be written: proof that the upload does not
    register with the owner's URL, which the ELT settings beside it still hold. The file is stored all the same."""
    from elt.demo import generate_medilink_drops

    data = generate_medilink_drops(end_date=date(2026, 11, 14), days=1, seed=5).files["triage_visits_2026-11-14.csv"]
    airflow = FakeAirflow().start()
    try:
        passwords = {**login_passwords, "api_drops_db_password": "not-the-password"}
        app = create_app(api_settings(settings.database_url, passwords, rate_limit="", airflow_url=airflow.url),
                         elt_settings=settings)
        client = app.test_client()
        key = create_key(settings.database_url, "drops", "clinician")  # triage visits are patient-level
        response = client.post("/api/v1/drops", headers={"Authorization": f"Bearer {key}"},
                               data={"drop_type": "medilink_triage_visits",
                                     "file": (BytesIO(data), "triage_visits_2026-11-14.csv")},
                               content_type="multipart/form-data")
    finally:
        airflow.stop()
    assert response.status_code == 202, response.get_json()
    assert response.get_json()["drop_id"] is None and "ledger could not be written" in response.get_json()["warning"]
    assert store.read("medical_records/input/triage_visits_2026-11-14.csv") == data
    assert db.execute("select count(*) from ops.file_ledger").fetchone()[0] == 0


def _secret(value: str):
    from pydantic import SecretStr

    return SecretStr(value)
