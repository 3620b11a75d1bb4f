"""The project's logins (elt/warehouse/roles.py) as every start leaves them, on the suite's real Postgres.

Logins belong to the whole server, not to one database: a test that changes one puts it back as the session's
template made it (tests/conftest.py, `login_passwords`).
"""

from __future__ import annotations

import uuid

import psycopg
import pytest
from pydantic import SecretStr

from backend.config import ApiSettings
from elt.config import Settings
from elt.pipeline import prepare
from elt.warehouse import roles
from elt.warehouse.roles import API_LOGIN, BI_LOGIN, DROPS_LOGIN, LOGINS, Login


def login_url(settings: Settings, login: Login, password: str) -> str:
    return ApiSettings(database_url=settings.database_url).login_url(login, SecretStr(password))


def shape(db: psycopg.Connection, name: str) -> tuple:
    """(powers it must not have, its memberships, whether it logs in) of role `name`."""
    powers = db.execute("select rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls, rolcanlogin "
                        "from pg_roles where rolname = %s", (name,)).fetchone()
    groups = {row[0] for row in db.execute(
        "select granted.rolname from pg_auth_members as membership join pg_roles as granted on granted.oid = "
        "membership.roleid join pg_roles as member on member.oid = membership.member where member.rolname = %s",
        (name,))}
    return powers, groups


@pytest.fixture
def restore_logins(settings, login_passwords):
    """Whatever a test does to the logins, the next start (with the session's passwords) puts right."""
    yield
    prepare(settings.model_copy(update={k: SecretStr(v) for k, v in login_passwords.items()}))


def test_every_login_logs_in_with_its_password_and_holds_only_its_group(settings, db, login_passwords):
    expected = {API_LOGIN.name: {"api_reader"}, DROPS_LOGIN.name: {"drop_registrar"}, BI_LOGIN.name: {"bi_reader"}}
    assert {login.name: set(login.groups) for login in LOGINS} == expected
    for login in LOGINS:
        assert shape(db, login.name) == ((False, False, False, False, False, True), expected[login.name])
        with psycopg.connect(login_url(settings, login, login_passwords[login.password_setting])) as conn:
            assert conn.execute("select session_user").fetchone()[0] == login.name
        stored = db.execute("select rolpassword from pg_authid where rolname = %s", (login.name,)).fetchone()[0]
        assert stored.startswith("SCRAM-SHA-256$")  # a verifier, never the password


def test_a_wrong_or_missing_password_is_refused(settings):
    """The embedded server asks every login but the owner for its password, as a production server does."""
    where = settings.pg_parts()
    for userinfo in (f"{API_LOGIN.name}:not-the-password", API_LOGIN.name):
        url = f"postgresql://{userinfo}@{where['host']}:{where['port']}/{where['dbname']}"
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(url, connect_timeout=5).close()


def test_a_login_given_more_is_put_back_in_shape_by_the_next_start(settings, db, login_passwords, restore_logins):
    db.execute("grant warehouse_loader to health_api")
    db.execute("alter role health_api createrole createdb")
    db.execute("alter role health_bi nologin")
    # The same membership granted a second time by another admin (a grant of its own since Postgres 16).
    admin, password = f"t_admin_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    db.execute(f"create role {admin} login password '{password}' createrole")
    db.execute(f"grant warehouse_loader, api_reader to {admin} with admin option")
    try:
        where = settings.pg_parts()
        with psycopg.connect(f"postgresql://{admin}:{password}@{where['host']}:{where['port']}/{where['dbname']}",
                             autocommit=True) as other:
            other.execute("grant warehouse_loader, api_reader to health_api")
        prepare(settings.model_copy(update={k: SecretStr(v) for k, v in login_passwords.items()}))
        assert shape(db, API_LOGIN.name) == ((False, False, False, False, False, True), {"api_reader"})
        assert shape(db, BI_LOGIN.name) == ((False, False, False, False, False, True), {"bi_reader"})
    finally:
        db.execute(f"drop owned by {admin}")
        db.execute(f"drop role {admin}")


def test_a_changed_password_takes_effect_on_the_next_start(settings, login_passwords, restore_logins):
    old, new = login_passwords["bi_db_password"], uuid.uuid4().hex
    prepare(settings.model_copy(update={"bi_db_password": SecretStr(new)}))
    with psycopg.connect(login_url(settings, BI_LOGIN, new)) as conn:
        assert conn.execute("select session_user").fetchone()[0] == BI_LOGIN.name
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(login_url(settings, BI_LOGIN, old), connect_timeout=5).close()


def test_an_unchanged_password_is_not_set_again(settings, db, login_passwords):
    """A superuser start compares the stored verifier (its salt differs each time it is set)."""
    before = db.execute("select rolpassword from pg_authid where rolname = %s", (API_LOGIN.name,)).fetchone()[0]
    prepare(settings.model_copy(update={k: SecretStr(v) for k, v in login_passwords.items()}))
    after = db.execute("select rolpassword from pg_authid where rolname = %s", (API_LOGIN.name,)).fetchone()[0]
    assert after == before


def test_a_login_without_a_password_is_not_created_and_one_with_a_password_is(settings, db, monkeypatch):
    name = f"t_login_{uuid.uuid4().hex[:8]}"
    login = Login(name, ("bi_reader",), "bi_db_password", "a test")
    monkeypatch.setattr(roles, "LOGINS", (login,))
    password = "p@ss:w/rd%é"  # characters a URL must quote
    try:
        prepare(settings)  # no bi_db_password in these settings
        assert db.execute("select 1 from pg_roles where rolname = %s", (name,)).fetchone() is None
        prepare(settings.model_copy(update={"bi_db_password": SecretStr(password)}))
        assert shape(db, name) == ((False, False, False, False, False, True), {"bi_reader"})
        with psycopg.connect(login_url(settings, login, password)) as conn:
            assert conn.execute("select current_user").fetchone()[0] == name
    finally:
        db.execute(f'drop role if exists "{name}"')


def test_each_login_password_has_one_setting_read_from_one_variable(monkeypatch):
    """The ELT (which creates the logins) and the API (which logs in with them) read the same variables."""
    for login in LOGINS:
        monkeypatch.setenv(login.password_variable, f"from-env-{login.name}")
    elt = Settings()
    assert roles.login_passwords(elt) == {login.name: f"from-env-{login.name}" for login in LOGINS}
    api = ApiSettings(database_url="postgresql://owner:secret@db.example:6432/warehouse?sslmode=require")
    assert api.reads_url() == "postgresql://health_api:from-env-health_api@db.example:6432/warehouse?sslmode=require"
    assert api.drops_url() == ("postgresql://health_api_drops:from-env-health_api_drops@db.example:6432/warehouse"
                               "?sslmode=require")
    assert api.sqlalchemy_url().startswith("postgresql+psycopg://health_api:")


def test_the_api_uses_its_url_as_it_is_without_a_password_and_quotes_a_password():
    url = "postgresql://someone@db.example/warehouse"
    assert ApiSettings(database_url=url).reads_url() == url
    assert ApiSettings(database_url=url, db_password="p@ss:w/rd%").reads_url() == (
        "postgresql://health_api:p%40ss%3Aw%2Frd%25@db.example/warehouse")
