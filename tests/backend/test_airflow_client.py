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
