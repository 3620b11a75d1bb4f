"""The ways to run a connector and read its records: `elt connectors ...` and its DAG under dag.test()."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest

from elt.cli import main
from tests.connectors.conftest import MART

DAGS = Path(__file__).resolve().parents[2] / "airflow" / "dags"


@pytest.fixture
def environment(connectors, monkeypatch):
    """The process environment pointed at the test's warehouse and connectors (what the CLI and DAGs read)."""
    from elt.config import get_settings

    settings, declare = connectors
    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    monkeypatch.setenv("S3_ENDPOINT_URL", settings.s3_endpoint_url)
    monkeypatch.setenv("S3_BUCKET", settings.s3_bucket)
    monkeypatch.setenv("CONNECTORS_DIR", str(settings.connectors_dir))
    get_settings.cache_clear()
    yield settings, declare
    get_settings.cache_clear()


def test_cli_list_check_run_and_runs(environment, make_mart, tmp_path, capsys, db):
    settings, declare = environment
    rows, _ = make_mart(120)
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    declare("census_share", f"description: To the share.\ndeliver: {{mart: {MART}, to: {{kind: folder, path: {outbox}}}}}\n")
    assert main(["connectors", "check"]) == 0
    assert "ok     census_share.yml" in capsys.readouterr().out

    assert main(["connectors", "run", "census_share", "--format", "json"]) == 0
    ran = json.loads(capsys.readouterr().out)
    assert ran["status"] == "succeeded" and ran["rows"] == len(rows)
    assert main(["connectors", "run", "census_share"]) == 0
    assert "skipped" in capsys.readouterr().out

    assert main(["connectors", "runs", "census_share", "--format", "json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [(r["status"], r["trigger"]) for r in records] == [("skipped", "cli"), ("succeeded", "cli")]
    assert main(["connectors", "list", "--format", "json"]) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert listed["connector"] == "census_share" and listed["last_status"] == "skipped"


def test_cli_refuses_a_bad_or_undeclared_connector(environment, capsys):
    settings, declare = environment
    declare("leaky", "description: x\ndeliver: {mart: clinical.patient_summary, to: {kind: folder, path: /tmp}}\n")
    assert main(["connectors", "check"]) == 1
    assert "leaky.yml: personal_data: must be true" in capsys.readouterr().err
    assert main(["connectors", "run", "leaky"]) == 1
    assert "personal_data" in capsys.readouterr().err
    assert main(["connectors", "run", "nothing_here"]) == 1
    assert "no connector 'nothing_here'" in capsys.readouterr().err


def test_the_dag_runs_the_connector_and_skips_a_delivery_already_made(environment, airflow_home, make_mart, tmp_path,
                                                                       db):
    from airflow.dag_processing.dagbag import DagBag

    settings, declare = environment
    make_mart(30)
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    declare("census_dag", f"description: By Airflow.\nschedule: '0 6 * * 1'\n"
                          f"deliver: {{mart: {MART}, to: {{kind: folder, path: {outbox}, format: parquet}}}}\n")
    bag = DagBag(str(DAGS / "connectors.py"))
    assert bag.import_errors == {}
    dag = bag.dags["connector_census_dag"]
    assert dag.timetable.expression == "0 6 * * 1" and set(dag.params) == {"full_reload", "dry_run"}
    assert dag.test().state == "success"
    second = dag.test()
    assert {ti.task_id: ti.state for ti in second.get_task_instances()} == {"run": "skipped"}
    statuses = db.execute("select status, trigger from ops.connector_runs order by run_id").fetchall()
    assert statuses == [("succeeded", "manual"), ("skipped", "manual")]
    assert len(list((outbox / MART).glob("*.parquet"))) == 1


def test_a_refused_delivery_fails_the_dag_without_retries(environment, airflow_home, make_mart, monkeypatch,
                                                         pg_server_url, db):
    from airflow.dag_processing.dagbag import DagBag

    from tests.conftest import create_database, drop_database

    settings, declare = environment
    make_mart(5)
    url = create_database(pg_server_url, "hw_refusing")
    try:
        with psycopg.connect(url, autocommit=True) as partner:
            partner.execute("create schema reporting")
            partner.execute("create table reporting.narrow (ward_id integer primary key)")
        monkeypatch.setenv("AIRFLOW_CONN_REFUSING_DB", url)
        declare("census_refused", f"description: Refused.\ndeliver: {{mart: {MART}, to: {{kind: postgres, "
                                  "table: reporting.narrow, credentials: {conn_id: refusing_db}}}\n")
        run = DagBag(str(DAGS / "connectors.py")).dags["connector_census_refused"].test()
    finally:
        drop_database(pg_server_url, "hw_refusing")
    (ti,) = run.get_task_instances()
    assert run.state == "failed" and ti.state == "failed" and ti.try_number == 1
    assert db.execute("select status from ops.connector_runs").fetchall() == [("failed",)]
