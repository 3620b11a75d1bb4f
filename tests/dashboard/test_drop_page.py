"""The dashboard on a warehouse of its own: before any file, every page says there is no data yet and what to do;
a file that breaks its contract is refused with the API's reason; and a KH03 workbook dropped on the drop page is
followed through its real ingest and marts runs (dag.test(); Airflow's REST API for /runs is tests/backend/
fake_airflow.py, told what those runs did) to the bed occupancy page, which then shows the API's figures."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from backend.app import create_app
from backend.auth import create_key
from tests.backend.conftest import api_settings
from tests.dashboard.conftest import dashboard, serving
from tests.elt.kh03_fixtures import build_kh03

DAGS = Path(__file__).resolve().parents[2] / "airflow" / "dags"
KH03_NAME = "Beds-Open-Overnight-Q2-2020-21.xlsx"  # the generated workbook is July to September 2020
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def texts(elements) -> str:
    return " ".join(str(e.value) for e in elements)


@pytest.fixture
def own_api(settings, login_passwords, airflow):
    """The API over this test's empty warehouse and bucket (logged in as its own logins), starting runs on the fake
    Airflow; its URL and an analyst key."""
    app = create_app(api_settings(settings.database_url, login_passwords, rate_limit="", auth_failure_limit="",
                                  airflow_url=airflow.url), elt_settings=settings)
    with serving(app) as url:
        yield url, create_key(settings.database_url, "dashboard drops", "analyst")


@pytest.mark.parametrize("page", ["01_bed_occupancy", "02_clinics", "03_claims"])
def test_a_page_whose_mart_is_not_built_says_so_and_what_to_do(own_api, monkeypatch, page):
    url, key = own_api
    at = dashboard(url, key, monkeypatch, page)
    assert not at.exception and not at.error, texts(at.error)
    said = texts(at.info)
    assert "No data yet" in said and "has not been built yet" in said and "Drop a file" in said
    assert not at.metric and not at.dataframe


def test_a_file_that_breaks_its_contract_is_refused_with_the_apis_reason(own_api, monkeypatch, store):
    url, key = own_api
    at = dashboard(url, key, monkeypatch, "06_drop_a_file")
    at.selectbox(key="drop_type").set_value("nhs_kh03_overnight")
    at.file_uploader[0].set_value((KH03_NAME, b"not a workbook at all", XLSX))
    submit(at)
    assert "Not accepted (415" in texts(at.error)
    assert list(store.list("")) == []


def test_the_form_asks_for_the_fields_the_chosen_drop_type_needs(own_api, settings, monkeypatch):
    """A claims batch needs its payer and month beside the file; a KH03 workbook states its own quarter and needs
    nothing: the form follows the drop type chosen (the API's x-drop-fields)."""
    url, _ = own_api
    key = create_key(settings.database_url, "dashboard claims drops", "clinician")  # clinicians may drop claims
    at = dashboard(url, key, monkeypatch, "06_drop_a_file")
    at.selectbox(key="drop_type").set_value("nhs_kh03_overnight").run()
    assert not at.exception and [t.key for t in at.text_input] == ["drop_url"]
    at.selectbox(key="drop_type").set_value("claims").run()
    assert sorted(t.key for t in at.text_input) == ["drop_url", "field_month", "field_payer"]
    assert "YYYY-MM" in next(t for t in at.text_input if t.key == "field_month").help


def submit(at) -> None:
    next(b for b in [*at.button, *at.form_submit_button] if b.label == "Drop it").click().run()


@pytest.mark.e2e
def test_a_dropped_workbook_is_followed_to_its_finished_run_and_its_charts(own_api, settings, db, airflow,
                                                                          airflow_home, monkeypatch):
    url, key = own_api
    at = dashboard(url, key, monkeypatch, "06_drop_a_file")
    at.selectbox(key="drop_type").set_value("nhs_kh03_overnight")
    at.file_uploader[0].set_value((KH03_NAME, build_kh03(), XLSX))
    submit(at)
    assert not at.exception and not at.error, texts(at.error)
    assert "Accepted:" in texts(at.success)
    accepted = at.session_state["_drop_run"]
    run_id = accepted["run_id"]
    assert accepted["dag_id"] == "nhs_beds_ingest" and ("nhs_beds_ingest", run_id) in airflow.runs
    assert "queued" in texts(at.markdown)  # the run as Airflow has it now

    # Airflow's part, for real: the ingest DAG loads the workbook, the marts DAG builds the bed marts.
    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    monkeypatch.setenv("S3_ENDPOINT_URL", settings.s3_endpoint_url)
    monkeypatch.setenv("S3_BUCKET", settings.s3_bucket)
    from elt.config import get_settings

    get_settings.cache_clear()
    from airflow.dag_processing.dagbag import DagBag

    dags = DagBag(str(DAGS)).dags
    ingest = dags["nhs_beds_ingest"].test()
    marts = dags["nhs_beds_marts"].test()
    assert (ingest.state, marts.state) == ("success", "success")
    # ... and what its api-server then says about them.
    airflow.runs[("nhs_beds_ingest", run_id)].update(state="success", end_date="2026-12-06T10:00:00Z")
    airflow.publish("nhs_beds_ingest", run_id, asset="nhs_beds_raw", timestamp="2026-12-06T10:00:00Z",
                    created=(("nhs_beds_marts", marts.run_id, "success"),))

    next(b for b in at.button if b.label == "Refresh").click().run()
    assert not at.exception and not at.error, texts(at.error)
    assert "Loaded and the marts are built." in texts(at.success)
    assert "file loaded" in texts(at.markdown)
    (link,) = at.get("page_link")
    assert link.proto.label == "See it on Bed occupancy"

    at.switch_page("pages/01_bed_occupancy.py").run()
    assert not at.exception and not at.error, texts(at.error)
    national = requests.get(url + "/api/v1/beds/national", params={"sector": "General & Acute"},
                            headers={"Authorization": f"Bearer {key}"}, timeout=30).json()
    (row,) = national["data"]  # one quarter loaded
    (metric,) = at.metric
    assert metric.value == f"{row['occupancy_rate']:.1%}"
    assert f"source files (ledger ids) {accepted['drop_id']} ·" in texts(at.caption)


def test_a_run_that_failed_is_shown_with_the_reason_its_file_did_not_load(own_api, monkeypatch, db, airflow):
    url, key = own_api
    at = dashboard(url, key, monkeypatch, "06_drop_a_file")
    at.selectbox(key="drop_type").set_value("nhs_kh03_overnight")
    at.file_uploader[0].set_value((KH03_NAME, build_kh03(), XLSX))
    submit(at)
    accepted = at.session_state["_drop_run"]
    # What the load found (as the loader records it on the ledger row), and the run's end as Airflow reports it.
    db.execute("update ops.file_ledger set status = 'quarantined', error = 'england_mismatch: the England row is not "
               "the sum of the trusts (sheet NHS Trust by Sector)' where file_id = %s", (accepted["drop_id"],))
    airflow.runs[("nhs_beds_ingest", accepted["run_id"])].update(state="failed", end_date="2026-12-06T10:00:00Z")
    next(b for b in at.button if b.label == "Refresh").click().run()
    assert "The file did not load: england_mismatch: the England row is not the sum" in texts(at.error)
    assert "**failed**" in texts(at.markdown) and not at.get("page_link")
