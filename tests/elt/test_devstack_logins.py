"""./start.sh and the project's logins: passwords generated once into .env (none shipped), and an API process
that is given its own logins' passwords but none of the owner's credentials."""

from __future__ import annotations

import stat

from elt.devstack.__main__ import api_environment, ensure_login_passwords
from elt.warehouse.roles import LOGINS

VARIABLES = [login.password_variable for login in LOGINS]


def env_file_values(path) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not key.startswith("#"):
            values.setdefault(key, []).append(value)
    return values


def test_missing_passwords_are_generated_into_env_once(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("API_PORT=5000\n# API_DB_PASSWORD=\nBI_DB_PASSWORD=\n")
    env = {"API_DROPS_DB_PASSWORD": "chosen-by-the-operator"}

    generated = ensure_login_passwords(env_file, env)

    assert sorted(generated) == ["API_DB_PASSWORD", "BI_DB_PASSWORD"]
    written = env_file_values(env_file)
    assert written["API_PORT"] == ["5000"]
    assert "API_DROPS_DB_PASSWORD" not in written  # set elsewhere: not written, not changed
    for variable in generated:
        assert written[variable] == [env[variable]]  # one active line each (the empty one was replaced)
        assert len(env[variable]) >= 32
    assert env["API_DB_PASSWORD"] != env["BI_DB_PASSWORD"]
    assert "# API_DB_PASSWORD=" in env_file.read_text()  # the comment stays
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600

    # The next start reads them back from .env (./start.sh exports it) and generates nothing.
    before = env_file.read_text()
    again = {"API_DROPS_DB_PASSWORD": "chosen-by-the-operator", **{key: values[0] for key, values in written.items()}}
    assert ensure_login_passwords(env_file, again) == []
    assert env_file.read_text() == before


def test_a_missing_env_file_is_created(tmp_path):
    env: dict[str, str] = {}
    assert ensure_login_passwords(tmp_path / ".env", env) == VARIABLES
    assert {key: values[0] for key, values in env_file_values(tmp_path / ".env").items()} == env


def test_the_api_process_gets_its_logins_and_no_owner_credentials():
    env = {
        "DATABASE_URL": "postgresql://owner:owner-secret@db.example:5432/warehouse?sslmode=require",
        "AIRFLOW_DATABASE_URL": "postgresql://owner:owner-secret@db.example:5432/airflow",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql+psycopg2://owner:owner-secret@db.example:5432/airflow",
        "API_DB_PASSWORD": "api-secret", "API_DROPS_DB_PASSWORD": "drops-secret", "BI_DB_PASSWORD": "bi-secret",
        "AIRFLOW_ADMIN_PASSWORD": "admin", "S3_BUCKET": "landing", "API_PORT": "5000",
    }
    api_env = api_environment(env)
    assert api_env["API_DATABASE_URL"] == "postgresql://db.example:5432/warehouse?sslmode=require"
    assert not any("owner-secret" in value or "bi-secret" in value for value in api_env.values())
    assert {key: api_env[key] for key in ("API_DB_PASSWORD", "API_DROPS_DB_PASSWORD", "S3_BUCKET",
                                          "AIRFLOW_ADMIN_PASSWORD")} == {
        "API_DB_PASSWORD": "api-secret", "API_DROPS_DB_PASSWORD": "drops-secret", "S3_BUCKET": "landing",
        "AIRFLOW_ADMIN_PASSWORD": "admin"}
    # An API_DATABASE_URL the operator set is kept as it is.
    assert api_environment({**env, "API_DATABASE_URL": "postgresql://elsewhere/w"})["API_DATABASE_URL"] == (
        "postgresql://elsewhere/w")
