"""`elt bi-user` (./start.sh bi-user): a BI login made with one command connects, reads every analytics mart of the
built warehouse, and is refused on raw, ops, core and clinical; its password is printed once and kept nowhere.

Logins belong to the whole server: every test drops the logins it made.
"""

from __future__ import annotations

import json
import logging
import os
import re
import uuid

import psycopg
import pytest
from psycopg import sql

from elt.cli import main
from elt.devstack.servers import free_port
from elt.warehouse import bi_users

REFUSED_SCHEMAS = ("raw", "ops", "core", "clinical")


@pytest.fixture
def cli_on(monkeypatch):
    """Point the `elt` command at a database URL, as ./start.sh points it at the stack."""
    from elt.config import get_settings

    def point(database_url: str) -> None:
        monkeypatch.setenv("DATABASE_URL", database_url)
        get_settings.cache_clear()

    yield point
    get_settings.cache_clear()


@pytest.fixture
def login_name(pg_server_url):
    """A fresh login name, dropped afterwards whatever the test left."""
    name = f"bi_test_{uuid.uuid4().hex[:8]}"
    yield name
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("drop role if exists {}").format(sql.Identifier(name)))


def _analytics_marts(dbt_manifest) -> set[str]:
    """Every analytics model dbt materialises, from the manifest: what a BI tool is told it can read."""
    nodes = json.loads(dbt_manifest.read_text())["nodes"].values()
    return {f"{n['schema']}.{n['alias']}" for n in nodes if n["resource_type"] == "model"
            and n["schema"] == "analytics" and n["config"]["materialized"] != "ephemeral"}


def _relations(conn: psycopg.Connection, schema: str) -> set[str]:
    return {f"{schema}.{name}" for (name,) in conn.execute(
        "select table_name from information_schema.tables where table_schema = %s", (schema,))}


def _create(name: str, capsys) -> tuple[str, str]:
    """Run `elt bi-user create NAME`; its stdout and the connection URL it printed."""
    assert main(["bi-user", "create", name]) == 0
    out = capsys.readouterr().out
    urls = re.findall(r"postgresql://\S+", out)
    assert len(urls) == 1, out
    return out, urls[0]


def test_a_bi_login_reads_every_analytics_mart_and_nothing_else(warehouse, dbt_manifest, wdb, cli_on, login_name,
                                                               capsys):
    cli_on(warehouse.database_url)
    out, url = _create(login_name, capsys)
    marts = _analytics_marts(dbt_manifest)
    assert marts and marts <= _relations(wdb, "analytics")  # the manifest's marts are what the build made
    refused = {schema: _relations(wdb, schema) for schema in REFUSED_SCHEMAS}
    assert all(refused.values()), {schema: len(names) for schema, names in refused.items()}
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute("select session_user").fetchone()[0] == login_name
        for mart in sorted(marts):
            query = sql.SQL("select * from {} limit 1").format(sql.Identifier(*mart.split(".")))
            conn.execute(query).fetchall()  # raises InsufficientPrivilege if it may not
        for names in refused.values():
            for name in sorted(names):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute(sql.SQL("select * from {} limit 1").format(sql.Identifier(*name.split("."))))
    # The separate fields name the same place and login as the URL.
    fields = dict(re.findall(r"^  (\w+): +(\S+)", out, re.MULTILINE))
    assert url == (f"postgresql://{fields['user']}:{fields['password']}@{fields['host']}:{fields['port']}/"
                   f"{fields['database']}")
    assert fields["schema"] == "analytics" and fields["user"] == login_name


def test_the_password_is_printed_once_and_stored_nowhere(settings, db, login_name, tmp_path_factory, caplog):
    caplog.set_level(logging.DEBUG)
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute("set log_statement = 'all'")  # every statement of this session goes to the server's log
        login = bi_users.create(conn, login_name, settings.database_url)
    assert bi_users.NAME.fullmatch(login.name) and len(login.password) >= 32
    stored = db.execute("select rolpassword from pg_authid where rolname = %s", (login_name,)).fetchone()[0]
    assert stored.startswith("SCRAM-SHA-256$") and login.password not in stored
    assert not [r for r in caplog.records if login.password in r.getMessage()]
    with psycopg.connect(login.url()) as conn:  # the verifier is the password's
        assert conn.execute("select current_user").fetchone()[0] == login_name
    if os.environ.get("TEST_DATABASE_URL"):
        pytest.skip("the server's log is on the server given by TEST_DATABASE_URL, not readable from here")
    logs = list(tmp_path_factory.getbasetemp().glob("postgres*/postgres.log"))
    assert logs, "the embedded server's log (tests/conftest.py, embedded_postgres) was not found"
    text = "\n".join(log.read_text(errors="replace") for log in logs)
    assert f'create role "{login_name}"' in text  # the statement was logged ...
    assert login.password not in text  # ... with the verifier, never the password


def test_list_shows_it_and_drop_removes_it(settings, db, cli_on, login_name, capsys):
    cli_on(settings.database_url)
    _create(login_name, capsys)
    assert main(["bi-user", "list"]) == 0
    listed = capsys.readouterr().out
    assert re.search(rf"^{login_name} +yes +bi_reader +bi-user", listed, re.MULTILINE), listed
    assert re.search(r"^health_bi +yes +bi_reader +the project", listed, re.MULTILINE), listed
    assert main(["bi-user", "drop", login_name]) == 0
    assert db.execute("select 1 from pg_roles where rolname = %s", (login_name,)).fetchone() is None
    assert main(["bi-user", "drop", login_name]) == 2
    assert "no BI login named" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["Metabase", "1tableau", "power-bi", "bi;drop role postgres", "a" * 64, "",
                                  "health_bi", "bi_reader", "pg_monitor2", "postgres"])
def test_a_bad_name_is_refused_before_anything_is_made(settings, db, cli_on, capsys, name):
    cli_on(settings.database_url)
    roles = db.execute("select count(*) from pg_roles").fetchone()[0]
    assert main(["bi-user", "create", name]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and ("lower-case letters" in err or "warehouse itself uses" in err)
    assert db.execute("select count(*) from pg_roles").fetchone()[0] == roles


def test_an_existing_login_is_not_changed(settings, db, cli_on, login_name, capsys):
    cli_on(settings.database_url)
    _, url = _create(login_name, capsys)
    assert main(["bi-user", "create", login_name]) == 2
    assert "already exists" in capsys.readouterr().err
    with psycopg.connect(url) as conn:  # the first password still works
        assert conn.execute("select session_user").fetchone()[0] == login_name


def test_drop_refuses_a_login_that_is_not_a_bi_users(settings, db, cli_on, login_name, capsys):
    cli_on(settings.database_url)
    db.execute(sql.SQL("create role {} login in role bi_reader, api_reader").format(sql.Identifier(login_name)))
    assert main(["bi-user", "drop", login_name]) == 2
    assert "api_reader" in capsys.readouterr().err
    assert main(["bi-user", "drop", "health_bi"]) == 2
    assert db.execute("select count(*) from pg_roles where rolname in (%s, 'health_bi')",
                      (login_name,)).fetchone()[0] == 2


def test_a_database_that_does_not_answer_is_said_so(cli_on, capsys):
    cli_on(f"postgresql://postgres@127.0.0.1:{free_port()}/warehouse")
    assert main(["bi-user", "create", "metabase"]) == 2
    assert "cannot reach the warehouse Postgres" in capsys.readouterr().err
