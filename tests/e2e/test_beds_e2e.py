"""NHS bed occupancy, the whole slice: KH03 workbooks in S3 -> nhs_beds_ingest under dag.test() (load, then
publish the nhs_beds_raw asset) -> nhs_beds_marts under dag.test() (dbt build of the bed models) -> the API.

Expected figures are read here from the real workbooks with openpyxl (England row, one trust's cells in two
quarters), and the rates and changes computed from those cells by hand; never taken from the warehouse.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from tests.conftest import shared_data
from tests.elt.kh03_fixtures import Kh03Spec, build_kh03, openpyxl_row, openpyxl_sheet

PREFIX = "nhs/kh03/"
DAGS = Path(__file__).resolve().parents[2] / "airflow" / "dags"
Q1_FILE = "2021-Q1-Beds-Open-Overnight-Web_File-Final-DE5WC.xlsx"
Q2_FILE = "Beds-Open-Overnight-Web_File-Final-DE5WC.xlsx"
GA = "General & Acute"


def _client(settings):
    from backend.app import create_app
    from backend.auth import create_key
    from backend.config import ApiSettings

    client = create_app(ApiSettings(database_url=settings.database_url, rate_limit="")).test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = "Bearer " + create_key(settings.database_url, "e2e beds", "analyst")
    return client


@pytest.mark.e2e
def test_kh03_workbooks_in_s3_reach_the_bed_endpoints(settings, store, db, airflow_home, monkeypatch):
    q1, q2 = shared_data("kh03", Q1_FILE), shared_data("kh03", Q2_FILE)
    store.put(PREFIX + Q1_FILE, q1.read_bytes())
    store.put(PREFIX + Q2_FILE, q2.read_bytes())
    store.put(PREFIX + "no-period.xlsx", build_kh03(Kh03Spec(period_text=None, year=None, period_end=None)))
    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    monkeypatch.setenv("S3_ENDPOINT_URL", settings.s3_endpoint_url)
    monkeypatch.setenv("S3_BUCKET", settings.s3_bucket)
    from elt.config import get_settings

    get_settings.cache_clear()
    from airflow.dag_processing.dagbag import DagBag

    dags = DagBag(str(DAGS)).dags
    dag = dags["nhs_beds_ingest"]
    run = dag.test()

    assert run.state == "success"  # the unreadable workbook is quarantined; it does not fail the run
    assert {ti.task_id: ti.state for ti in run.get_task_instances()}["publish"] == "success"
    # Under the scheduler the asset event starts nhs_beds_marts; dag.test() runs one DAG, so it is run here.
    marts = dags["nhs_beds_marts"].test()
    assert marts.state == "success", {ti.task_id: ti.state for ti in marts.get_task_instances()}
    assert sorted(db.execute("select status, period_start::text from ops.file_ledger").fetchall()) == [
        ("loaded", "2020-04-01"), ("loaded", "2020-07-01"), ("quarantined", None)]
    assert db.execute("select state, files_loaded from ops.pipeline_runs where dag_id = 'nhs_beds_ingest'").fetchone() == (
        "success", 2)
    client = _client(settings)

    # England, Q2 2020-21, general and acute: the workbook's England row.
    england = openpyxl_row(q2, "NHS Trust by Sector", "England")
    body = client.get("/api/v1/beds/national", query_string={"financial_year": "2020-21", "quarter": 2,
                                                            "sector": GA}).get_json()
    assert body["meta"]["total"] == 1
    row = body["data"][0]
    available, occupied = england[("Available", GA)], england[("Occupied", GA)]
    assert (Decimal(str(row["beds_available"])), Decimal(str(row["beds_occupied"]))) == (
        Decimal(repr(available)), Decimal(repr(occupied)))
    assert row["occupancy_rate"] == pytest.approx(occupied / available, abs=5e-5)
    assert row["occupancy_rate"] == pytest.approx(england[("% Occupied", GA)], abs=5e-5)
    assert row["trusts_reporting"] > 100

    # Both quarters are listed, newest first.
    periods = client.get("/api/v1/beds/periods").get_json()["data"]
    assert [(p["financial_year"], p["quarter"], p["period_start"]) for p in periods] == [
        ("2020-21", 2, "2020-07-01"), ("2020-21", 1, "2020-04-01")]

    # One trust's history: its G&A rate in each quarter and the change between them, from the cells.
    barts_q1, barts_q2 = openpyxl_row(q1, "NHS Trust by Sector", "R1H"), openpyxl_row(q2, "NHS Trust by Sector", "R1H")
    rate_q1 = barts_q1[("Occupied", GA)] / barts_q1[("Available", GA)]
    rate_q2 = barts_q2[("Occupied", GA)] / barts_q2[("Available", GA)]
    history = client.get("/api/v1/beds/organisations/R1H/history", query_string={"sector": GA}).get_json()["data"]
    assert [(h["period_start"], h["level"]) for h in history] == [("2020-04-01", "trust"), ("2020-07-01", "trust")]
    assert history[0]["occupancy_rate"] == pytest.approx(rate_q1, abs=5e-5)
    assert history[1]["occupancy_rate"] == pytest.approx(rate_q2, abs=5e-5)
    assert history[0]["quarter_on_quarter_change"] is None  # Q4 2019-20 is not loaded
    assert history[1]["quarter_on_quarter_change"] == pytest.approx(rate_q2 - rate_q1, abs=1e-4)
    assert history[1]["is_above_85_pct"] is (rate_q2 > 0.85)

    # The 92% flag: as many trusts as the Q2 workbook has with G&A occupied / available above 0.92.
    rows, at = openpyxl_sheet(q2, "NHS Trust by Sector")
    trusts = [r for r in rows if r[at[(None, "Org Code")]]]
    above = sum(1 for r in trusts if (r[at[("Available", GA)]] or 0) > 0
                and r[at[("Occupied", GA)]] / r[at[("Available", GA)]] > 0.92)
    assert above > 0  # not vacuous
    flagged = client.get("/api/v1/beds/occupancy", query_string={
        "level": "trust", "financial_year": "2020-21", "quarter": 2, "sector": GA, "is_above_92_pct": "true",
        "count": "exact"}).get_json()
    assert flagged["meta"]["total"] == above

    # Specialties: Barts' general surgery in Q2, from the specialty sheet.
    surgery = openpyxl_row(q2, "Occupied by Specialty", "R1H")
    specialty = client.get("/api/v1/beds/specialties", query_string={
        "org_code": "R1H", "quarter": 2, "specialty_code": "100"}).get_json()["data"]
    assert len(specialty) == 1 and specialty[0]["specialty_name"] == "General Surgery"
    expected = next(value for (_, name), value in surgery.items() if name.startswith("100 "))
    assert Decimal(str(specialty[0]["beds_occupied"])) == Decimal(repr(float(expected)))

    # A run with nothing new loads nothing and leaves the marts as they are.
    built = db.execute("select max(built_at) from analytics.bed_occupancy_trends").fetchone()
    again = dag.test()
    assert again.state == "success"
    states = {ti.task_id: ti.state for ti in again.get_task_instances()}
    assert states["publish"] == "skipped"  # no asset event: nhs_beds_marts is not started
    assert db.execute("select max(built_at) from analytics.bed_occupancy_trends").fetchone() == built
    get_settings.cache_clear()
