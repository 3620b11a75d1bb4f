"""Real servers for the whole suite: a throwaway Postgres 16 and an S3 endpoint on loopback.

Set TEST_DATABASE_URL (a server where the tests may create databases, e.g.
postgresql://postgres:pw@127.0.0.1:5432/postgres) or TEST_S3_ENDPOINT_URL to use running servers instead.
Every test that touches the warehouse gets its own database (cloned from a prepared template) and its own
bucket, so tests never see each other's files or rows.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("AIRFLOW__COSMOS__ENABLE_TELEMETRY", "False")
os.environ.setdefault("SCARF_ANALYTICS", "false")
os.environ.setdefault("AWS_ACCESS_KEY_ID", "local")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "local")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")


def _with_database(url: str, database: str) -> str:
    return url.rsplit("/", 1)[0] + "/" + database


@pytest.fixture(scope="session")
def pg_server_url(tmp_path_factory):
    """libpq URL of a Postgres server (its `postgres` database) on which tests create their own databases."""
    if os.environ.get("TEST_DATABASE_URL"):
        yield os.environ["TEST_DATABASE_URL"]
        return
    with embedded_postgres(tmp_path_factory.mktemp("postgres")) as server:
        yield server.url("postgres")


@contextmanager
def embedded_postgres(log_dir: Path):
    """A throwaway Postgres 16 (elt.devstack.servers.EmbeddedPostgres), stopped and deleted afterwards. Its
    cluster goes in a fresh folder under the system's temporary directory, which the server's system user
    (under root) can enter, unlike pytest's own temporary folders (0700)."""
    from elt.devstack.servers import EmbeddedPostgres, free_port

    cluster = Path(tempfile.mkdtemp(prefix="hw-test-pg-"))
    server = EmbeddedPostgres(cluster, free_port(), log_dir / "postgres.log")
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(cluster, ignore_errors=True)


@pytest.fixture(scope="session")
def s3_endpoint_url(tmp_path_factory):
    if os.environ.get("TEST_S3_ENDPOINT_URL"):
        yield os.environ["TEST_S3_ENDPOINT_URL"]
        return
    from elt.devstack.servers import LocalS3, free_port

    server = LocalS3(free_port(), tmp_path_factory.mktemp("s3") / "s3.log")
    server.start()
    yield server.endpoint_url
    server.stop()


def create_database(server_url: str, name: str, template: str | None = None) -> str:
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')
        conn.execute(f'create database "{name}"' + (f' template "{template}"' if template else ""))
    return _with_database(server_url, name)


def drop_database(server_url: str, name: str) -> None:
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')


@pytest.fixture(scope="session")
def login_passwords() -> dict[str, str]:
    """Passwords of the project's logins (health_api, health_api_drops, health_bi) for this session, by Settings
    field. Logins belong to the whole server, so every test database shares them; the template sets them."""
    import secrets

    from elt.warehouse.roles import LOGINS

    return {login.password_setting: secrets.token_urlsafe(18) for login in LOGINS}


@pytest.fixture(scope="session")
def warehouse_template(pg_server_url, login_passwords) -> str:
    """A database with the ops schema and every contract's raw table, cloned by each test; the logins made."""
    from elt.config import Settings
    from elt.pipeline import prepare

    name = "hw_template"
    url = create_database(pg_server_url, name)
    prepare(Settings(database_url=url, **login_passwords))
    return name


@pytest.fixture
def settings(pg_server_url, s3_endpoint_url, warehouse_template):
    """Settings for a fresh warehouse database and a fresh, empty landing bucket."""
    import boto3

    from elt.config import Settings

    suffix = uuid.uuid4().hex[:10]
    database = f"hw_{suffix}"
    url = create_database(pg_server_url, database, template=warehouse_template)
    bucket = f"landing-{suffix}"
    boto3.client("s3", endpoint_url=s3_endpoint_url, region_name="us-east-1").create_bucket(Bucket=bucket)
    yield Settings(database_url=url, s3_endpoint_url=s3_endpoint_url, s3_bucket=bucket)
    drop_database(pg_server_url, database)


@pytest.fixture
def store(settings):
    from elt.storage.s3 import ObjectStore

    return ObjectStore(settings)


@pytest.fixture
def db(settings):
    """An autocommit connection to the test's warehouse database."""
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        yield conn


@pytest.fixture(scope="session")
def dbt_manifest() -> Path:
    """dbt/target/manifest.json, written by `dbt parse` unless current: medilink_marts renders its dbt tasks from it."""
    from elt.config import Settings
    from elt.transform import manifest_path, manifest_problem, parse

    settings = Settings()
    if manifest_problem(settings):
        parse(settings=settings)
    return manifest_path(settings)


@pytest.fixture(scope="session")
def airflow_home(pg_server_url, dbt_manifest, tmp_path_factory):
    """Airflow configured on its own metadata database, migrated once. Import airflow only after this."""
    home = tmp_path_factory.mktemp("airflow_home")
    meta_url = create_database(pg_server_url, "airflow_meta")
    os.environ.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": meta_url.replace("postgresql://", "postgresql+psycopg2://", 1),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "airflow" / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
    })
    airflow = Path(sys.executable).with_name("airflow")
    result = subprocess.run([str(airflow), "db", "migrate"], capture_output=True, text=True, env=os.environ.copy())
    assert result.returncode == 0, f"airflow db migrate failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    from elt.dag_factory import DBT_POOL, DBT_POOL_DESCRIPTION

    result = subprocess.run([str(airflow), "pools", "set", DBT_POOL, "1", DBT_POOL_DESCRIPTION], capture_output=True,
                            text=True, env=os.environ.copy())
    assert result.returncode == 0, f"airflow pools set failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    yield home
    # Close Airflow's pooled connections before the session's Postgres stops (else its atexit hook complains).
    if "airflow.settings" in sys.modules:
        sys.modules["airflow.settings"].dispose_orm()


@pytest.fixture
def airflow():
    """A fake of Airflow's REST API on loopback (tests/backend/fake_airflow.py): what the API's uploads trigger and
    its runs answer read, recorded for the test."""
    from tests.backend.fake_airflow import FakeAirflow

    fake = FakeAirflow().start()
    yield fake
    fake.stop()


def table_contents(db, tables) -> dict[str, list[tuple]]:
    """Every column of every row of each `schema.table`, in a fixed order; all but built_at, which says when a row
    was written: what an incremental build is compared with a full rebuild by."""
    from psycopg import sql

    contents = {}
    for table in tables:
        schema, name = table.split(".")
        columns = [column for (column,) in db.execute(
            "select column_name from information_schema.columns where table_schema = %s and table_name = %s "
            "and column_name <> 'built_at' order by ordinal_position", (schema, name))]
        listed = sql.SQL(", ").join(sql.Identifier(column) for column in columns)
        contents[table] = db.execute(sql.SQL("select {} from {} order by {}").format(
            listed, sql.Identifier(schema, name), listed)).fetchall()
    return contents


def shared_data(*parts: str) -> Path:
    """A file under ../shared/data, or skip with the reason when the folder is not beside the repository."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not found: the shared data folder lives beside the repository (../shared/data)")
    return path
