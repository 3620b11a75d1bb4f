"""GET /api/v1/connectors and /api/v1/connectors/<name>/runs: admins only, read by the API's own login (health_api),
answering what the run records hold, and described by /openapi.json."""

from __future__ import annotations

import jsonschema
import pytest

from elt.connectors.engine import run_connector
from tests.connectors.conftest import MART


@pytest.fixture
def client(connectors, login_passwords):
    from backend.app import create_app
    from backend.auth import create_key
    from tests.backend.conftest import api_settings

    settings, declare = connectors
    app = create_app(api_settings(settings.database_url, login_passwords, rate_limit="", auth_failure_limit=""),
                     elt_settings=settings)
    keys = {role: create_key(settings.database_url, f"{role} key", role) for role in ("analyst", "admin")}

    def get(path: str, role: str | None = "admin", **kwargs):
        headers = {"Authorization": f"Bearer {keys[role]}"} if role else {}
        return app.test_client().get(path, headers=headers, **kwargs)

    return get, app


def test_admins_see_the_connectors_and_their_runs(connectors, client, make_mart, tmp_path):
    settings, declare = connectors
    get, app = client
    make_mart(40)
    declare("census_api", f"description: For the API.\ndeliver: {{mart: {MART}, to: {{kind: folder, path: {tmp_path}}}}}\n")
    declare("broken", "description: x\ndeliver: {mart: nope}\n")
    first = run_connector("census_api", settings=settings)
    run_connector("census_api", settings=settings)

    listed = get("/api/v1/connectors")
    assert listed.status_code == 200
    body = listed.get_json()
    (connector,) = body["data"]
    assert connector["name"] == "census_api" and connector["kind"] == "folder"
    assert connector["last_run"]["status"] == "skipped"
    assert len(body["problems"]) == 1 and body["problems"][0].startswith("broken.yml: ")

    runs = get("/api/v1/connectors/census_api/runs").get_json()
    assert [(r["status"], r["run_key"]) for r in runs["data"]] == [("skipped", first.run_key),
                                                                    ("succeeded", first.run_key)]
    assert runs["data"][1]["rows"] == 40 and runs["data"][1]["sha256"] == first.sha256
    page = get("/api/v1/connectors/census_api/runs", query_string={"limit": 1}).get_json()
    assert len(page["data"]) == 1
    rest = get("/api/v1/connectors/census_api/runs",
               query_string={"before": page["meta"]["next_before"]}).get_json()["data"]
    assert [r["status"] for r in rest] == ["succeeded"]

    spec = app.test_client().get("/openapi.json").get_json()
    for path, answer in (("/api/v1/connectors", body), ("/api/v1/connectors/{name}/runs", runs)):
        schema = spec["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        jsonschema.Draft202012Validator({**spec, **schema}).validate(answer)


def test_other_roles_and_strangers_are_refused(connectors, client):
    settings, declare = connectors
    get, _ = client
    declare("census_api", f"description: x\ndeliver: {{mart: {MART}, to: {{kind: folder, path: /tmp}}}}\n")
    for path in ("/api/v1/connectors", "/api/v1/connectors/census_api/runs"):
        assert get(path, role=None).status_code == 401
        assert get(path, role="analyst").status_code == 403
    assert get("/api/v1/connectors/nobody/runs").status_code == 404
    assert get("/api/v1/connectors/census_api/runs", query_string={"limit": 0}).status_code == 400
    assert get("/api/v1/connectors/census_api/runs", query_string={"color": "red"}).status_code == 400
