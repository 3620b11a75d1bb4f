"""`elt docs` writes the dbt documentation site and the API serves it, exposures included."""

from __future__ import annotations

import json

from backend.app import create_app
from backend.config import ApiSettings
from elt.transform import generate_docs


def client_for(settings, docs_dir):
    return create_app(ApiSettings(database_url=settings.database_url, dbt_docs_dir=docs_dir)).test_client()


def test_docs_not_generated_yet_is_a_404_that_says_what_to_run(settings, tmp_path):
    response = client_for(settings, tmp_path).get("/dbt-docs/")
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "docs_not_built"
    assert "elt docs" in response.get_json()["error"]["message"]


def test_generated_docs_are_served_with_models_columns_and_exposures(settings, tmp_path):
    docs = generate_docs(target_path=tmp_path / "docs", settings=settings)
    client = client_for(settings, docs)

    page = client.get("/dbt-docs/")
    assert page.status_code == 200 and b"dbt" in page.data and page.mimetype == "text/html"
    assert client.get("/dbt-docs").status_code in {301, 302, 308}
    manifest = json.loads(client.get("/dbt-docs/manifest.json").data)
    exposures = {e["name"]: e for e in manifest["exposures"].values()}
    assert set(exposures) == {"medilink_api", "beds_api", "bi_dashboards", "claims_api"}  # one file per family's folder
    assert "model.health_warehouse.patient_summary" in exposures["medilink_api"]["depends_on"]["nodes"]
    assert "model.health_warehouse.bed_occupancy_trends" in exposures["beds_api"]["depends_on"]["nodes"]
    trends = manifest["nodes"]["model.health_warehouse.triage_trends"]
    assert trends["description"].startswith("One row per facility per calendar day")
    assert "7-day moving average" in trends["columns"]["visit_count_7d_avg"]["description"]
    assert client.get("/dbt-docs/catalog.json").status_code == 200
    # Nothing else in the folder is reachable.
    assert client.get("/dbt-docs/run_results.json").status_code == 404
    assert client.get("/dbt-docs/..%2Fprofiles.yml").status_code == 404
