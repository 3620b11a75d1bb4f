"""The retry policy and the run records the DAGs rely on, on real parts: the loader against Postgres and S3, dbt
run in the task's process as the dbt tasks run it (elt.transform.invoke_dbt, elt.dbt_watch)."""

from __future__ import annotations

import os

import psycopg
import pytest

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


def test_dbt_in_the_task_process_gets_the_connection_and_disclosure_rule_of_the_settings(settings, tmp_path):
    """What the Airflow tasks' dbt sees while it runs (elt.transform.invoke_dbt): DBT_PG_* from DATABASE_URL and
    DBT_SDC_* from the settings, as `elt build` passes them; none of it left behind in the process afterwards."""
    from elt.transform import invoke_dbt

    settings = settings.model_copy(update={"sdc_threshold": 20, "sdc_rounding_base": 10})
    seen: dict[str, str] = {}

    def look(event) -> None:
        seen.update({key: value for key, value in os.environ.items() if key.startswith(("DBT_PG_", "DBT_SDC_"))})

    before = {key for key in os.environ if key.startswith(("DBT_PG_", "DBT_SDC_"))}
    result = invoke_dbt(["show", "--inline", "select 1 as one"], target_path=tmp_path / "target", settings=settings,
                        callbacks=[look])
    assert result.success  # dbt connected with those variables
    parts = settings.pg_parts()
    assert (seen["DBT_PG_DBNAME"], seen["DBT_PG_PORT"], seen["DBT_PG_USER"]) == (parts["dbname"], parts["port"], parts["user"])
    assert (seen["DBT_SDC_THRESHOLD"], seen["DBT_SDC_ROUNDING_BASE"]) == ("20", "10")
    assert {key for key in os.environ if key.startswith(("DBT_PG_", "DBT_SDC_"))} == before


def _node_task(kind: str):
    from elt.dbt_plan import WatchTask
    from elt.dbt_watch import DbtNodeTask

    watch = WatchTask(("dbt", "m"), "run" if kind == "model" else "test", kind, ("model.p.m",), ("build",), ())
    return DbtNodeTask(task_id=f"{kind}_task", watch=watch)


def test_a_dbt_model_is_retried_only_when_the_connection_failed():
    from airflow.sdk.exceptions import AirflowFailException

    from elt.dbt_watch import DbtNodeFailed

    model = _node_task("model")
    assert isinstance(model._failure("m error: server closed the connection unexpectedly"), DbtNodeFailed)
    refused = model._failure('m error: column "visit_dat" does not exist')
    assert isinstance(refused, AirflowFailException) and "not retried: not a connection failure" in str(refused)


def test_a_failing_dbt_test_is_never_retried():
    from airflow.sdk.exceptions import AirflowFailException

    failure = _node_task("tests")._failure("t fail: server closed the connection unexpectedly")
    assert isinstance(failure, AirflowFailException) and "a test failed: the data needs fixing" in str(failure)


def test_refused_row_values_stay_out_of_dbt_task_logs_and_errors(settings, tmp_path, capfd):
    """Postgres repeats a refused row's values on its DETAIL line (personal data, in a fact); dbt run in the task's
    process, as the Airflow tasks run it (invoke_dbt), logs its errors without that line, and the message a task
    shows or publishes drops it too."""
    from elt.dbt_watch import _clean
    from elt.transform import invoke_dbt

    # Postgres's DETAIL and CONTEXT for this bad json quote the input: stand-ins for a refused row's values.
    secrets = ("Expected JSON value", "JSON data, line 1")
    result = invoke_dbt(["show", "--inline", "select '{\"a\": }'::json as x", "--log-path", str(tmp_path / "logs")],
                        target_path=tmp_path / "target", settings=settings)
    assert not result.success
    printed = capfd.readouterr().out
    assert "invalid input syntax for type json" in printed and "values are not shown" in printed
    logged = (tmp_path / "logs" / "dbt.log").read_text()
    assert "invalid input syntax for type json" in logged
    assert not [secret for secret in secrets if secret in printed or secret in logged]

    shown = _clean('new row violates check constraint "x"\nDETAIL:  Failing row contains (Ada, Obi, 080...).')
    assert "violates check constraint" in shown and "Failing row" not in shown


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
