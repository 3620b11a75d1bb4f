"""GET /api/v1/facilities and GET /health on a real Postgres."""

from __future__ import annotations

import pytest


def test_health_reports_database_and_data(client, facilities_mart):
    response = client.get("/health")
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "ok" and body["database"]["ok"] is True
    assert body["data"]["facility_performance"] == {"rows": 5, "built_at": "2026-11-15T02:10:00+00:00"}


def test_health_says_no_data_before_the_first_build(client):
    body = client.get("/health").get_json()
    assert body["status"] == "no_data" and body["data"]["facility_performance"]["rows"] == 0


def test_health_is_503_when_the_database_is_unreachable(settings):
    from backend.app import create_app
    from backend.config import ApiSettings

    app = create_app(ApiSettings(database_url="postgresql://postgres@127.0.0.1:1/warehouse"))
    response = app.test_client().get("/health")
    assert response.status_code == 503 and response.get_json()["database"]["ok"] is False


def test_list_walks_every_facility_once_by_cursor(client, facilities_mart):
    seen, cursor, pages = [], None, 0
    while True:
        response = client.get("/api/v1/facilities", query_string={"cursor": cursor} if cursor else {})
        assert response.status_code == 200
        body = response.get_json()
        seen += [row["facility_id"] for row in body["data"]]
        cursor, pages = body["meta"]["next_cursor"], pages + 1
        if cursor is None:
            break
    # Default page size is 2 in the test app: 5 rows -> 3 pages, ordered by name.
    assert pages == 3
    by_name = sorted(facilities_mart, key=lambda row: row[1])
    assert seen == [row[0] for row in by_name]


def test_filters_are_case_insensitive_and_figures_come_from_the_mart(client, facilities_mart):
    body = client.get("/api/v1/facilities?state=LAGOS&limit=10").get_json()
    assert {row["facility_id"] for row in body["data"]} == {"f2", "f4"}
    ikeja = next(row for row in body["data"] if row["facility_id"] == "f2")
    assert ikeja["triage_visit_count"] == 40 and ikeja["avg_daily_visits"] == 1.0 and ikeja["volume_band"] == "Medium"
    assert body["meta"]["as_of"] == "2026-11-15T02:10:00+00:00"
    assert set(ikeja) >= {"facility_id", "state", "lga", "patient_count"} and "built_at" not in ikeja


def test_volume_band_filter(client, facilities_mart):
    body = client.get("/api/v1/facilities?volume_band=Low&limit=10").get_json()
    assert [row["facility_id"] for row in body["data"]] == ["f4", "f3"]


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("?colour=red", "unknown_parameter"),
        ("?limit=51", "invalid_parameter"),
        ("?limit=0", "invalid_parameter"),
        ("?volume_band=Huge", "invalid_parameter"),
        ("?cursor=not-a-cursor", "invalid_cursor"),
    ],
)
def test_bad_parameters_get_a_400_envelope(client, facilities_mart, query, code):
    response = client.get("/api/v1/facilities" + query)
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["status"] == 400 and error["code"] == code and error["message"]


def test_injection_strings_are_just_values(client, facilities_mart):
    response = client.get("/api/v1/facilities", query_string={"state": "Lagos' or '1'='1"})
    assert response.status_code == 200 and response.get_json()["data"] == []


def test_unknown_route_uses_the_envelope_and_security_headers(client):
    response = client.get("/api/v1/nothing-here")
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "not_found"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
