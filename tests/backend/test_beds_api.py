"""The bed-occupancy endpoints (/api/v1/beds/...) on marts built by real dbt from generated KH03 workbooks
(three quarters: Q1 and Q2 2020-21, Q2 2021-22) loaded by the real pipeline.

Expected figures are computed here from the workbook specs (tests/elt/kh03_fixtures.py): rates as
occupied / available, changes as differences of those, flags from the rates.
"""

from __future__ import annotations

import uuid

import pytest

from backend.app import create_app
from backend.auth import create_key
from backend.config import ApiSettings
from tests.conftest import create_database, drop_database
from tests.elt.kh03_fixtures import DEFAULT_TRUSTS, Kh03Spec, Trust, build_kh03

GA = "General & Acute"
BARTS, ROYAL_FREE, BRADFORD = DEFAULT_TRUSTS


def _with_barts_occupied(ga_occupied: float) -> tuple[Trust, ...]:
    barts = Trust(BARTS.code, BARTS.name, BARTS.region, BARTS.available,
                  (ga_occupied, *BARTS.occupied[1:]))
    return (barts, ROYAL_FREE, BRADFORD)


# Barts' G&A occupied beds per quarter (available stays 1474.9021739130435): Q2 2021-22 is above 92%.
QUARTERS = {
    ("2020-21", 1): (Kh03Spec(period_text="April to June 2020", period_end="June",
                              trusts=_with_barts_occupied(1200.5)), 1200.5),
    ("2020-21", 2): (Kh03Spec(), BARTS.occupied[0]),
    ("2021-22", 2): (Kh03Spec(period_text="July to September 2021", year="2021-22",
                              trusts=_with_barts_occupied(1400.25)), 1400.25),
}


def barts_rate(quarter: tuple[str, int]) -> float:
    return QUARTERS[quarter][1] / BARTS.available[0]


@pytest.fixture(scope="module")
def beds(pg_server_url, s3_endpoint_url, warehouse_template, dbt_manifest):
    """(API test client with an analyst key, settings) on a warehouse holding the three quarters' marts."""
    import boto3

    from elt.config import Settings
    from elt.families import declared_families
    from elt.pipeline import discover_new_files, ingest_file
    from elt.transform import build

    suffix = uuid.uuid4().hex[:10]
    database, bucket = f"hw_beds_{suffix}", f"beds-{suffix}"
    url = create_database(pg_server_url, database, template=warehouse_template)
    boto3.client("s3", endpoint_url=s3_endpoint_url, region_name="us-east-1").create_bucket(Bucket=bucket)
    settings = Settings(database_url=url, s3_endpoint_url=s3_endpoint_url, s3_bucket=bucket)
    from elt.storage.s3 import ObjectStore

    store = ObjectStore(settings)
    for (year, quarter), (spec, _) in QUARTERS.items():
        store.put(f"nhs/kh03/Beds-Open-Overnight-Web_File-Q{quarter}-{year}.xlsx", build_kh03(spec))
    outcomes = [ingest_file(key, settings=settings) for key in discover_new_files("nhs", settings=settings)]
    assert [o.status for o in outcomes] == ["loaded"] * 3, [o.error for o in outcomes]
    build(select=declared_families(settings)["nhs_beds"].dbt_select(), settings=settings)
    client = create_app(ApiSettings(database_url=url, rate_limit="")).test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = "Bearer " + create_key(url, "beds tests", "analyst")
    yield client, settings
    drop_database(pg_server_url, database)


def test_occupancy_by_trust_quarter_and_sector_with_changes_and_flags(beds):
    client, _ = beds
    body = client.get("/api/v1/beds/occupancy", query_string={
        "level": "trust", "org_code": "R1H", "sector": GA, "count": "exact"}).get_json()
    rows = {(r["financial_year"], r["quarter"]): r for r in body["data"]}
    assert set(rows) == set(QUARTERS) and body["meta"]["total"] == 3
    for quarter, row in rows.items():
        assert row["occupancy_rate"] == pytest.approx(barts_rate(quarter), abs=1e-12)
        assert row["is_above_85_pct"] is (barts_rate(quarter) > 0.85)
        assert row["is_above_92_pct"] is (barts_rate(quarter) > 0.92)
    assert rows[("2020-21", 1)]["quarter_on_quarter_change"] is None  # Q4 2019-20 not loaded
    assert rows[("2020-21", 2)]["quarter_on_quarter_change"] == pytest.approx(
        barts_rate(("2020-21", 2)) - barts_rate(("2020-21", 1)), abs=1e-12)
    assert rows[("2021-22", 2)]["quarter_on_quarter_change"] is None  # Q1 2021-22 not loaded
    assert rows[("2021-22", 2)]["previous_year_rate"] == pytest.approx(barts_rate(("2020-21", 2)), abs=1e-12)
    assert rows[("2021-22", 2)]["year_on_year_change"] == pytest.approx(
        barts_rate(("2021-22", 2)) - barts_rate(("2020-21", 2)), abs=1e-12)
    assert rows[("2021-22", 2)]["is_above_92_pct"] is True  # not vacuous: 1400.25 / 1474.90 = 0.949


def test_flags_apply_to_general_and_acute_only_and_filter(beds):
    client, _ = beds
    other = client.get("/api/v1/beds/occupancy", query_string={"sector": "Maternity", "level": "trust"}).get_json()
    assert other["data"] and all(r["is_above_85_pct"] is None for r in other["data"])
    flagged = client.get("/api/v1/beds/occupancy", query_string={"is_above_92_pct": "true"}).get_json()["data"]
    expected = {(trust.code, quarter) for quarter, (spec, _) in QUARTERS.items() for trust in spec.trusts
                if trust.available[0] > 0 and trust.occupied[0] / trust.available[0] > 0.92}
    assert {(r["org_code"], (r["financial_year"], r["quarter"])) for r in flagged} == expected


def test_region_rows_and_one_organisations_history(beds):
    client, _ = beds
    london = client.get("/api/v1/beds/occupancy", query_string={
        "level": "region", "org_code": "Y56", "sector": "Total", "financial_year": "2020-21", "quarter": 2}).get_json()["data"]
    members = [t for t in DEFAULT_TRUSTS if t.region == "Y56"]
    assert len(london) == 1
    assert london[0]["beds_available"] == pytest.approx(sum(t.total("available") for t in members), abs=1e-9)
    assert london[0]["beds_occupied"] == pytest.approx(sum(t.total("occupied") for t in members), abs=1e-9)

    history = client.get("/api/v1/beds/organisations/r1h/history", query_string={"sector": GA}).get_json()
    assert [(r["financial_year"], r["quarter"]) for r in history["data"]] == sorted(QUARTERS, key=lambda q: (q[0], q[1]))
    assert history["meta"]["total"] == 3
    assert client.get("/api/v1/beds/organisations/NOPE/history").get_json()["data"] == []
    # the path names the organisation: an org_code parameter as well is refused
    refused = client.get("/api/v1/beds/organisations/R1H/history", query_string={"org_code": "RAL"})
    assert refused.status_code == 400


def test_national_rows_are_the_published_england_row_beside_the_trust_sums(beds):
    client, _ = beds
    rows = client.get("/api/v1/beds/national", query_string={"sector": GA}).get_json()["data"]
    assert [(r["financial_year"], r["quarter"]) for r in rows] == [("2020-21", 1), ("2020-21", 2), ("2021-22", 2)]
    for row in rows:
        spec = QUARTERS[(row["financial_year"], row["quarter"])][0]
        available = sum(t.available[0] for t in spec.trusts)
        occupied = sum(t.occupied[0] for t in spec.trusts)
        assert row["beds_available"] == pytest.approx(available, abs=1e-9)
        assert row["beds_occupied"] == pytest.approx(occupied, abs=1e-9)
        assert row["occupancy_rate"] == pytest.approx(occupied / available, abs=1e-12)
        assert row["trust_beds_occupied"] == pytest.approx(occupied, abs=1e-9)
        assert row["trusts_reporting"] == len(spec.trusts)


def test_periods_newest_first_and_specialties(beds):
    client, _ = beds
    periods = client.get("/api/v1/beds/periods").get_json()["data"]
    assert [(p["period_start"], p["period_end"]) for p in periods] == [
        ("2021-07-01", "2021-09-30"), ("2020-07-01", "2020-09-30"), ("2020-04-01", "2020-06-30")]
    assert all(p["has_trust_sheet"] and p["has_region_sheet"] and p["has_specialty_sheet"] for p in periods)

    rows = client.get("/api/v1/beds/specialties", query_string={
        "org_code": "RAL", "financial_year": "2020-21", "quarter": 2}).get_json()["data"]
    by_code = {r["specialty_code"]: r for r in rows}
    parts = [ROYAL_FREE.specialty(i) for i in range(3)]
    assert by_code["101"]["beds_occupied"] == pytest.approx(parts[1], abs=1e-9)
    assert by_code["101"]["share_of_trust_occupied"] == pytest.approx(parts[1] / sum(parts), abs=1e-9)


def test_csv_download_and_keys(beds):
    client, _ = beds
    response = client.get("/api/v1/beds/national", query_string={"format": "csv", "sector": GA})
    assert response.status_code == 200 and response.headers["X-Total-Count"] == "3"
    assert response.data.decode().splitlines()[0].startswith("financial_year,quarter,period_start")
    anonymous = client.get("/api/v1/beds/national", headers={"Authorization": ""})
    assert anonymous.status_code == 401


def test_bed_endpoints_say_not_built_until_a_workbook_loads(client):
    response = client.get("/api/v1/beds/occupancy")
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "not_built"
    assert "POST /api/v1/drops" in response.get_json()["error"]["message"]


def test_ready_lists_the_bed_marts_but_does_not_wait_for_them(app, db):
    catalogue = app.extensions["catalogue"]
    beds = catalogue.on_arrival_marts()
    assert "analytics.bed_occupancy_trends" in beds
    for table in set(catalogue.served_marts()) - beds:  # every nightly mart built just now (empty tables will do)
        db.execute(f"create schema if not exists {table.split('.')[0]}")
        db.execute(f"create table {table} (built_at timestamptz)")
        db.execute(f"insert into {table} values (now())")  # noqa: S608 - names from the endpoint declarations
        db.execute(f"grant usage on schema {table.split('.')[0]} to api_reader; grant select on {table} to api_reader")

    response = app.test_client().get("/ready")

    assert response.status_code == 200 and response.get_json()["status"] == "ready"
    marts = response.get_json()["marts"]
    assert marts["analytics.bed_occupancy_trends"] == {"built": False, "has_rows": False, "built_at": None,
                                                       "fresh": False, "refreshed": "on_arrival"}

    # A workbook with only the trust sheet: the bed marts are built, one of them with no rows. /ready and the
    # ./start.sh status line say what is there and what is empty, not "not built".
    from elt.devstack.__main__ import marts_status

    assert "bed marts not built yet (upload a KH03 workbook)" in marts_status(marts)
    for table in sorted(beds):
        db.execute(f"create table {table} (built_at timestamptz)")
        db.execute(f"grant select on {table} to api_reader")
        if table != "analytics.specialty_occupancy":
            db.execute(f"insert into {table} values (now())")  # noqa: S608
    marts = app.test_client().get("/ready").get_json()["marts"]
    assert marts["analytics.specialty_occupancy"]["built"] is True
    assert marts["analytics.specialty_occupancy"]["has_rows"] is False
    assert marts["analytics.bed_occupancy_trends"]["has_rows"] is True
    line = marts_status(marts)
    assert "not built" not in line
    assert f"bed marts built, {len(beds) - 1} of {len(beds)} with rows (empty: specialty_occupancy" in line
