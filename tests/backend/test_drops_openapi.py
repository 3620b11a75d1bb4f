"""The drop and run endpoints answer what /openapi.json says they do: real answers checked against the document,
then a schemathesis run over the three operations (with a loopback Airflow and this test's own bucket, so the
generated files land nowhere that matters and nothing is fetched from outside: the settings' allow-list is
www.england.nhs.uk only, https only, public addresses only)."""

from __future__ import annotations

from io import BytesIO

import jsonschema
import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from openapi_spec_validator import validate
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from backend.app import create_app
from backend.auth import create_key
from backend.config import ApiSettings
from tests.elt.kh03_fixtures import build_kh03

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
OPERATIONS = [("/api/v1/drops", "POST"), ("/api/v1/drops/from-url", "POST"), ("/api/v1/runs/{run_id}", "GET")]


@pytest.fixture
def drops_app(settings, airflow):
    app = create_app(ApiSettings(database_url=settings.database_url, rate_limit="", auth_failure_limit="",
                                 airflow_url=airflow.url, upload_max_bytes=200_000, fetch_timeout_seconds=3),
                     elt_settings=settings)
    key = create_key(settings.database_url, "drops openapi", "analyst")
    return app, {"Authorization": f"Bearer {key}"}


def conforms(spec: dict, path: str, method: str, response) -> None:
    documented = spec["paths"][path][method]["responses"]
    assert str(response.status_code) in documented, (path, method, response.status_code)
    schema = documented[str(response.status_code)]["content"]["application/json"]["schema"]
    jsonschema.Draft202012Validator({**spec, **schema}).validate(response.get_json())


def test_real_answers_match_the_document(drops_app, airflow):
    app, headers = drops_app
    client = app.test_client()
    spec = client.get("/openapi.json").get_json()
    validate(spec)
    assert spec["paths"]["/api/v1/drops"].keys() == {"get", "post"}  # the ledger list and the upload share a path
    name = "Beds-Open-Overnight-Q2-2020-21.xlsx"
    answers = [
        ("/api/v1/drops", "post", client.post("/api/v1/drops", headers=headers, content_type="multipart/form-data",
                                             data={"drop_type": "nhs_kh03_overnight", "file": (BytesIO(build_kh03()), name)})),
        ("/api/v1/drops", "post", client.post("/api/v1/drops", headers=headers, content_type="multipart/form-data",
                                             data={"drop_type": "nhs_kh03_overnight", "file": (BytesIO(build_kh03()), name)})),
        ("/api/v1/drops", "post", client.post("/api/v1/drops", content_type="multipart/form-data", data={})),
        ("/api/v1/drops/from-url", "post", client.post("/api/v1/drops/from-url", headers=headers, json={
            "url": "https://evil.example/x.xlsx", "drop_type": "nhs_kh03_overnight"})),
    ]
    run_id = answers[0][2].get_json()["run_id"]
    answers += [("/api/v1/runs/{run_id}", "get", client.get(f"/api/v1/runs/{run_id}", headers=headers)),
                ("/api/v1/runs/{run_id}", "get", client.get("/api/v1/runs/nope", headers=headers))]
    # `marts` as an object: the run that the ingest run's published data started, then Airflow not saying.
    airflow.publish("nhs_beds_ingest", run_id, asset="nhs_beds_raw", timestamp="2026-11-15T10:00:00Z",
                    created=(("nhs_beds_marts", "asset_triggered__1", "running"),))
    answers.append(("/api/v1/runs/{run_id}", "get", client.get(f"/api/v1/runs/{run_id}", headers=headers)))
    airflow.events_down = True
    answers.append(("/api/v1/runs/{run_id}", "get", client.get(f"/api/v1/runs/{run_id}", headers=headers)))
    assert [response.status_code for *_, response in answers] == [202, 409, 401, 400, 200, 404, 200, 200]
    assert [answers[i][2].get_json()["marts"] for i in (4, 6, 7)] == [None, {
        "dag_id": "nhs_beds_marts", "run_id": "asset_triggered__1", "state": "running"}, {
        "dag_id": "nhs_beds_marts", "run_id": None, "state": "unknown"}]
    for path, method, response in answers:
        conforms(spec, path, method, response)
    page = client.get("/docs").get_data(as_text=True)
    assert "POST <code>/api/v1/drops</code>" in page and "GET <code>/api/v1/runs/{run_id}</code>" in page


@pytest.mark.parametrize(("path", "method"), OPERATIONS)
@pytest.mark.parametrize("mode", list(GenerationMode))
def test_no_request_breaks_the_drop_endpoints_or_their_schema(drops_app, path, method, mode):
    app, headers = drops_app
    operation = schemathesis.openapi.from_wsgi("/openapi.json", app)[path][method]
    statuses = []

    @given(case=operation.as_strategy(generation_mode=mode))
    @hypothesis_settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def run(case):
        statuses.append(case.call_and_validate(headers=headers, checks=CHECKS).status_code)

    run()
    assert statuses and all(status < 500 or status in (502, 503) for status in statuses)
