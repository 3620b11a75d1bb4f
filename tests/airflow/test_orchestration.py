"""The retry policy and the run records the DAGs rely on, on real parts: the loader against Postgres and S3,
cosmos's own dbt operators with dbt's own result type."""

from __future__ import annotations

import os

import psycopg
import pytest

from elt.config import Settings
from elt.orchestration import full_refresh_requested, load_file

PREFIX = "medical_records/input/"


def test_a_load_that_fails_for_a_reason_a_retry_cannot_cure_is_not_retried(settings, store):
    from airflow.sdk.exceptions import AirflowFailException

    store.put(PREFIX + "facilities.csv", b"name,state,lga,lat,lon,type\nA,Lagos,Ikeja,6.6,3.3,Clinic\n")
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute("drop table raw.medilink_facilities cascade")  # a broken warehouse, not a flaky one
    with pytest.raises(AirflowFailException, match="will not be retried.*UndefinedTable.*elt files"):
        load_file(PREFIX + "facilities.csv", dry_run=False, settings=settings)


def test_a_load_that_lost_its_database_is_left_to_airflow_to_retry(settings, store):
    store.put(PREFIX + "facilities.csv", b"name,state,lga,lat,lon,type\nA,Lagos,Ikeja,6.6,3.3,Clinic\n")
    from elt.devstack.servers import free_port
    from elt.orchestration import TransientLoadFailure

    unreachable = settings.model_copy(update={"database_url": f"postgresql://nobody@127.0.0.1:{free_port()}/x"})
    # Any exception but AirflowFailException is retried by Airflow; this one names the class, not a row.
    with pytest.raises(TransientLoadFailure, match="OperationalError.*Connection refused"):
        load_file(PREFIX + "facilities.csv", dry_run=False, settings=unreachable)
    assert store.exists(PREFIX + "facilities.csv")  # untouched, for the retry


@pytest.fixture
def dbt_operators(tmp_path, monkeypatch, settings):
    """Cosmos's run and test operators as medilink_marts builds them, after the interceptor has run."""
    from cosmos import ProfileConfig
    from cosmos.constants import InvocationMode
    from cosmos.operators.local import DbtRunLocalOperator, DbtTestLocalOperator

    from elt.config import get_settings
    from elt.orchestration import _prepare_dbt_task

    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    get_settings.cache_clear()
    project = Settings().dbt_project_dir
    profile = ProfileConfig(profile_name="health_warehouse", target_name=Settings().dbt_target,
                            profiles_yml_filepath=f"{project}/profiles.yml")
    operators = {}
    for kind, cls in (("run", DbtRunLocalOperator), ("test", DbtTestLocalOperator)):
        operator = cls(task_id=kind, project_dir=project, profile_config=profile,
                       invocation_mode=InvocationMode.DBT_RUNNER)
        _prepare_dbt_task({}, operator)
        operators[kind] = operator
    yield operators
    get_settings.cache_clear()


def _failed(message: str):
    from dbt.cli.main import dbtRunnerResult

    return dbtRunnerResult(success=False, exception=RuntimeError(message))


def test_dbt_gets_its_connection_from_the_environment_not_the_dag(dbt_operators, settings):
    env = dbt_operators["run"].env
    assert env["DBT_PG_DBNAME"] == settings.pg_parts()["dbname"]
    assert env["DBT_PG_PORT"] == settings.pg_parts()["port"]


def test_dbt_gets_the_disclosure_rule_of_the_settings_as_elt_build_does(dbt_operators, monkeypatch):
    from elt.config import get_settings
    from elt.orchestration import _prepare_dbt_task

    assert (dbt_operators["run"].env["DBT_SDC_THRESHOLD"], dbt_operators["run"].env["DBT_SDC_ROUNDING_BASE"]) == ("10", "5")
    monkeypatch.setenv("SDC_THRESHOLD", "20")
    monkeypatch.setenv("SDC_ROUNDING_BASE", "10")
    get_settings.cache_clear()
    operator = dbt_operators["test"]
    operator.env = {}
    _prepare_dbt_task({}, operator)
    assert (operator.env["DBT_SDC_THRESHOLD"], operator.env["DBT_SDC_ROUNDING_BASE"]) == ("20", "10")


def test_a_dbt_model_is_retried_only_when_the_connection_failed(dbt_operators):
    from airflow.sdk.exceptions import AirflowFailException
    from cosmos.exceptions import CosmosDbtRunError

    run = dbt_operators["run"]
    with pytest.raises(CosmosDbtRunError):  # Airflow retries this one
        run.handle_exception_dbt_runner(_failed("server closed the connection unexpectedly"))
    with pytest.raises(AirflowFailException, match="not retried: not a connection failure"):
        run.handle_exception_dbt_runner(_failed('column "visit_dat" does not exist'))
    from dbt.cli.main import dbtRunnerResult

    run.handle_exception_dbt_runner(dbtRunnerResult(success=True))  # success passes through


def test_a_failing_dbt_test_is_never_retried(dbt_operators):
    from airflow.sdk.exceptions import AirflowFailException

    with pytest.raises(AirflowFailException, match="a test failed: the data needs fixing"):
        dbt_operators["test"].handle_exception_dbt_runner(_failed("server closed the connection unexpectedly"))


def test_refused_row_values_stay_out_of_dbt_task_logs_and_errors(dbt_operators, settings, tmp_path, capfd):
    """Postgres repeats a refused row's values on its DETAIL line (personal data, in a fact); dbt run in the task's
    process, as cosmos runs it, logs its errors without that line, and the task's error drops it too."""
    from airflow.sdk.exceptions import AirflowFailException
    from dbt.cli.main import dbtRunner

    from elt.transform import keep_row_values_out_of_dbt_logs

    # Postgres's DETAIL and CONTEXT for this bad json quote the input: stand-ins for a refused row's values.
    secrets = ("Expected JSON value", "JSON data, line 1")
    keep_row_values_out_of_dbt_logs()
    saved = dict(os.environ)
    os.environ.update(dbt_operators["run"].env)
    try:
        project = str(Settings().dbt_project_dir)
        result = dbtRunner().invoke(["show", "--inline", "select '{\"a\": }'::json as x", "--project-dir", project,
                                     "--profiles-dir", project, "--target-path", str(tmp_path / "target"),
                                     "--log-path", str(tmp_path / "logs")])
    finally:
        os.environ.clear()
        os.environ.update(saved)
    assert not result.success
    printed = capfd.readouterr().out
    assert "invalid input syntax for type json" in printed and "values are not shown" in printed
    logged = (tmp_path / "logs" / "dbt.log").read_text()
    assert "invalid input syntax for type json" in logged
    assert not [secret for secret in secrets if secret in printed or secret in logged]

    with pytest.raises(AirflowFailException) as refused:
        dbt_operators["run"].handle_exception_dbt_runner(_failed(
            'new row violates check constraint "x"\nDETAIL:  Failing row contains (Ada, Obi, 080...).'))
    assert "Failing row" not in str(refused.value) and refused.value.__cause__ is None


@pytest.mark.parametrize(
    ("params", "events", "expected"),
    [
        ({"full_refresh": False}, {}, False),
        ({"full_refresh": True}, {}, True),
        ({"full_refresh": False}, {"medilink_raw": [{"files_loaded": 3, "full_refresh": False}]}, False),
        ({"full_refresh": False}, {"medilink_raw": [{"files_loaded": 0, "full_refresh": True}]}, True),
    ],
)
def test_full_refresh_comes_from_the_form_or_from_the_ingest_run(params, events, expected):
    class Event:
        def __init__(self, extra):
            self.extra = extra

    context = {"params": params, "triggering_asset_events": {a: [Event(e) for e in es] for a, es in events.items()}}
    assert full_refresh_requested(context) is expected
