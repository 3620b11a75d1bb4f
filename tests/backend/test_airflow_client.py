"""backend/airflow_client.py against a loopback server that answers like Airflow 3's api-server: the token, the
trigger body Airflow 3.x requires, token reuse and renewal, and how failures are told apart."""

from __future__ import annotations

import socket

import pytest

from backend.airflow_client import AirflowClient, AirflowRefused, AirflowUnavailable, token_expiry
from tests.backend.fake_airflow import FakeAirflow, make_token


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


def test_asset_events_are_asked_for_one_run_newest_first(airflow):
    airflow.publish("medilink_ingest", "run_a", timestamp="2026-11-15T10:00:00Z",
                    created=(("medilink_marts", "asset_triggered__1", "success"),))
    airflow.publish("medilink_ingest", "run_b", timestamp="2026-11-15T10:30:00Z")
    airflow.publish("medilink_ingest", "run_a", timestamp="2026-11-15T11:00:00Z")
    airflow.publish("nhs_beds_ingest", "run_a", asset="nhs_beds_raw", timestamp="2026-11-15T12:00:00Z")
    client = AirflowClient(airflow.url, "admin", "admin")
    events = client.asset_events("medilink_ingest", "run_a")
    assert [(e["source_dag_id"], e["source_run_id"], e["timestamp"]) for e in events] == [
        ("medilink_ingest", "run_a", "2026-11-15T11:00:00Z"), ("medilink_ingest", "run_a", "2026-11-15T10:00:00Z")]
    assert [r["run_id"] for r in events[1]["created_dagruns"]] == ["asset_triggered__1"]
    assert client.asset_events("medilink_ingest", "run c+d") == []
    # Values with characters a query string must escape arrive as they were sent.
    assert airflow.asset_event_calls()[-1].path.count("run+c%2Bd") == 1
    assert airflow.asset_event_calls()[0].authorization == "Bearer " + next(iter(airflow.tokens))


def test_asset_events_fail_as_the_other_calls_do(airflow):
    airflow.events_status = 500
    with pytest.raises(AirflowRefused) as refused:
        AirflowClient(airflow.url, "admin", "admin").asset_events("medilink_ingest", "run_a")
    assert refused.value.status == 500 and "/api/v2/assets/events" in refused.value.message
    airflow.events_status, airflow.events_down = None, True
    with pytest.raises(AirflowUnavailable):
        AirflowClient(airflow.url, "admin", "admin").asset_events("medilink_ingest", "run_a")
    with pytest.raises(AirflowUnavailable):
        AirflowClient(f"http://127.0.0.1:{closed_port()}", "admin", "admin", timeout_seconds=2).asset_events("d", "r")


def test_the_asset_events_call_and_answer_are_what_airflow_declares(airflow):
    """The query parameters sent are parameters of Airflow's own GET /api/v2/assets/events, and what the loopback
    server answers validates against Airflow's AssetEventCollectionResponse, from the OpenAPI document that ships
    with the installed Airflow (read as a file: nothing of Airflow is imported)."""
    import importlib.util
    from pathlib import Path
    from urllib.parse import parse_qs, urlsplit

    import jsonschema
    import yaml

    spec = yaml.safe_load((Path(importlib.util.find_spec("airflow").origin).parent / "api_fastapi" / "core_api" /
                           "openapi" / "v2-rest-api-generated.yaml").read_text())
    operation = spec["paths"]["/api/v2/assets/events"]["get"]
    airflow.publish("medilink_ingest", "run_a", timestamp="2026-11-15T10:00:00Z",
                    created=(("medilink_marts", "asset_triggered__1", "running"),))
    AirflowClient(airflow.url, "admin", "admin").asset_events("medilink_ingest", "run_a")
    (call,) = airflow.asset_event_calls()
    sent = parse_qs(urlsplit(call.path).query)
    assert set(sent) <= {p["name"] for p in operation["parameters"] if p["in"] == "query"}
    order_by = next(p for p in operation["parameters"] if p["name"] == "order_by")
    supported = order_by["description"].split("Supported attributes: `")[1].rstrip("`").split(", ")
    assert sent["order_by"] == ["-timestamp"] and "timestamp" in supported
    limit = next(p for p in operation["parameters"] if p["name"] == "limit")["schema"]
    assert int(sent["limit"][0]) >= limit.get("minimum", 0)
    answer = airflow._asset_events(sent)[1]
    schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
    jsonschema.Draft202012Validator({**schema, "components": spec["components"]}).validate(answer)
