"""backend/airflow_client.py against a loopback server that answers like Airflow 3's api-server: the token, the
trigger body Airflow 3.x requires, token reuse and renewal, and how failures are told apart."""

from __future__ import annotations

import socket

import pytest

from backend.airflow_client import AirflowClient, AirflowRefused, AirflowUnavailable, token_expiry
from tests.backend.fake_airflow import FakeAirflow, make_token


@pytest.fixture
def airflow():
    fake = FakeAirflow().start()
    yield fake
    fake.stop()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_trigger_sends_the_body_airflow_3_requires_with_the_token(airflow):
    client = AirflowClient(airflow.url, "admin", "admin")
    run = client.trigger("nhs_beds_ingest", {"key": "nhs/kh03/x.xlsx"}, run_id="api_drop_1_x", note="by the API")
    assert run["dag_run_id"] == "api_drop_1_x" and run["state"] == "queued"
    token_call, trigger = airflow.requests
    assert (token_call.method, token_call.path, token_call.body) == (
        "POST", "/auth/token", {"username": "admin", "password": "admin"})
    assert trigger.path == "/api/v2/dags/nhs_beds_ingest/dagRuns"
    assert trigger.authorization == "Bearer " + next(iter(airflow.tokens))
    # logical_date is required but nullable in 3.x's TriggerDAGRunPostBody: sent, as null
    assert trigger.body == {"logical_date": None, "conf": {"key": "nhs/kh03/x.xlsx"}, "dag_run_id": "api_drop_1_x",
                            "note": "by the API"}


def test_the_token_is_reused_then_renewed_once_when_airflow_refuses_it(airflow):
    client = AirflowClient(airflow.url, "admin", "admin")
    client.trigger("medilink_ingest", {"key": "a"})
    client.trigger("medilink_ingest", {"key": "b"})
    assert len(airflow.calls("POST", "/auth/token")) == 1
    airflow.revoke_tokens()  # an api-server restarted with a new JWT secret
    assert client.get_run("medilink_ingest", "nope") is None
    assert len(airflow.calls("POST", "/auth/token")) == 2
    assert [r.authorization is not None for r in airflow.calls("GET")] == [True, True]


def test_a_token_near_its_expiry_is_not_used():
    assert token_expiry(make_token("admin", 3600)) > token_expiry(make_token("admin", 10))
    assert token_expiry("not-a-jwt") > 0  # unreadable: kept a few minutes


def test_an_expiring_token_is_replaced_before_use():
    fake = FakeAirflow(token_seconds=30).start()  # inside the one-minute margin: never reused
    try:
        client = AirflowClient(fake.url, "admin", "admin")
        client.trigger("medilink_ingest", {"key": "a"})
        client.trigger("medilink_ingest", {"key": "b"})
        assert len(fake.calls("POST", "/auth/token")) == 2
    finally:
        fake.stop()


def test_failures_say_whether_airflow_answered(airflow):
    with pytest.raises(AirflowRefused) as refused:
        AirflowClient(airflow.url, "admin", "wrong").trigger("medilink_ingest", {"key": "a"})
    assert refused.value.status == 401 and "API_AIRFLOW_PASSWORD" in refused.value.message
    with pytest.raises(AirflowRefused) as unknown:
        AirflowClient(airflow.url, "admin", "admin").trigger("no_such_dag", {"key": "a"})
    assert unknown.value.status == 404 and "no_such_dag" in unknown.value.message
    with pytest.raises(AirflowUnavailable):
        AirflowClient(f"http://127.0.0.1:{closed_port()}", "admin", "admin", timeout_seconds=2).get_run("d", "r")


def test_what_is_sent_and_read_is_what_airflow_itself_declares(airflow, tmp_path):
    """The trigger and token bodies validate against Airflow's own request models, the run id the API makes
    matches Airflow's default allowed_run_id_pattern, and the fields read from a run are DAGRunResponse's (in a
    subprocess with its own AIRFLOW_HOME: importing Airflow writes its configuration there)."""
    import json
    import os
    import subprocess
    import sys

    from backend.api.uploads import RUN_ID

    client = AirflowClient(airflow.url, "admin", "admin")
    client.trigger("medilink_ingest", {"key": "medical_records/input/x.csv"}, run_id="api_drop_7_20261203T101500123456Z",
                   note="Dropped through the API by key 3")
    token_body, trigger_body = (r.body for r in airflow.requests)
    script = """
import json, re, sys
from airflow.api_fastapi.auth.managers.simple.datamodels.login import LoginBody
from airflow.api_fastapi.core_api.datamodels.dag_run import DAGRunResponse, TriggerDAGRunPostBody
from airflow.configuration import conf
token_body, trigger_body = json.loads(sys.argv[1]), json.loads(sys.argv[2])
LoginBody.model_validate(token_body)
body = TriggerDAGRunPostBody.model_validate(trigger_body)
assert body.logical_date is None and body.conf == trigger_body["conf"]
assert re.match(conf.get("scheduler", "allowed_run_id_pattern"), body.dag_run_id)
print(json.dumps(sorted(DAGRunResponse.model_fields)))
"""
    result = subprocess.run([sys.executable, "-c", script, json.dumps(token_body), json.dumps(trigger_body)],
                            capture_output=True, text=True, env={**os.environ, "AIRFLOW_HOME": str(tmp_path)}, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    fields = set(json.loads(result.stdout.strip().splitlines()[-1]))
    assert {"dag_run_id", "state", "run_type", "queued_at", "start_date", "end_date", "conf", "note"} <= fields
    assert RUN_ID.fullmatch(trigger_body["dag_run_id"])
