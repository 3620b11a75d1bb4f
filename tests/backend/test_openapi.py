"""/openapi.json is a valid OpenAPI 3.1 document that describes every route and every response; /docs shows it."""

from __future__ import annotations

import re
from urllib.parse import quote

import jsonschema
import pytest
from openapi_spec_validator import validate

from backend.api.catalogue import declared_catalogue
from tests.backend.conftest import path_values, required_values

ENDPOINTS = [(endpoint.path, endpoint.resource) for endpoint in declared_catalogue().endpoints]


@pytest.fixture(scope="module")
def spec(api):
    response = api.test_client().get("/openapi.json")
    assert response.status_code == 200
    return response.get_json()


def test_the_document_is_valid_openapi_3_1(spec):
    assert spec["openapi"].startswith("3.1")
    validate(spec)


def test_every_route_is_described_and_nothing_else(api, spec):
    # Flask's /runs/<run_id> is OpenAPI's /runs/{run_id}
    served = {(re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule), method)
              for rule in api.url_map.iter_rules() if rule.rule.startswith("/api/")
              for method in rule.methods - {"HEAD", "OPTIONS"}}
    assert served == {(path, method.upper()) for path, item in spec["paths"].items() if path.startswith("/api/")
                      for method in item}
    assert {"/health", "/ready"} <= set(spec["paths"])


def _pointer(path: str, *parts: str) -> str:
    escape = [p.replace("~", "~0").replace("/", "~1") for p in ("paths", path, *parts)]
    return "#/" + "/".join(escape)


@pytest.mark.parametrize("path", [path for path, _ in ENDPOINTS])
def test_every_response_matches_its_schema(spec, call, wdb, path):
    ok = jsonschema.Draft202012Validator({**spec, "$ref": _pointer(
        path, "get", "responses", "200", "content", "application/json", "schema")})
    error = jsonschema.Draft202012Validator({**spec, "$ref": "#/components/schemas/Error"})
    resource = dict(ENDPOINTS)[path]
    values = path_values(wdb, resource)  # a row of the mart: one trust's history, one claim's explanation
    url = re.sub(r"{(\w+)}", lambda m: quote(values[m.group(1)], safe=""), path)
    body = call(url, query_string={**required_values(wdb, resource)[0], "limit": 50}).get_json()
    assert body["data"]
    ok.validate(body)
    refused = call(url, None)
    assert refused.status_code == 401
    error.validate(refused.get_json())
    bad = call(url, query_string={"limit": "x"})
    assert bad.status_code == 400
    error.validate(bad.get_json())


def test_columns_carry_the_dbt_descriptions(spec):
    trends = spec["components"]["schemas"]["TriageTrendsRow"]["properties"]
    assert "7-day" in trends["visit_count_7d_avg"]["description"]
    summary = spec["paths"]["/api/v1/patient-summary"]["get"]
    assert "clinician" in summary["description"] and "audit" in summary["description"]
    described = [name for _, resource in ENDPOINTS for name, schema in
                 spec["components"]["schemas"][resource.name.title().replace("-", "") + "Row"]["properties"].items()
                 if schema.get("description")]
    total = sum(len(resource.columns) for _, resource in ENDPOINTS)
    assert len(described) == total  # every served column is documented in the dbt project


def test_the_docs_page_describes_every_endpoint_without_fetching_anything(api, spec):
    response = api.test_client().get("/docs")
    assert response.status_code == 200 and response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    for path in spec["paths"]:
        assert f"<code>{path}</code>" in page
    assert "visit_count_7d_avg" in page and "<script" not in page
    assert response.headers["Content-Security-Policy"].startswith("default-src 'none'")
