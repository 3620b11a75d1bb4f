"""`app` and `client` fixtures: the real app factory on the test's warehouse database."""

from __future__ import annotations

import pytest

from backend.app import create_app
from backend.config import ApiSettings

# The published mart's columns, as dbt's enforced contract declares them (dbt/models/analytics).
FACILITY_PERFORMANCE_DDL = """
create schema if not exists analytics;
create table analytics.facility_performance (
    facility_id text, facility_name text, state text, lga text, facility_type text,
    patient_count bigint, medical_record_count bigint, triage_visit_count bigint, urgent_visit_count bigint,
    avg_triage_level numeric, first_visit_date date, last_visit_date date, active_days bigint,
    avg_daily_visits numeric, volume_band text, built_at timestamptz
)
"""


@pytest.fixture
def app(settings):
    return create_app(ApiSettings(database_url=settings.database_url, max_page_size=50, default_page_size=2))


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def facilities_mart(db):
    """Five facilities with known figures."""
    db.execute(FACILITY_PERFORMANCE_DDL)
    rows = [
        ("f1", "Aminu Kano Teaching Hospital", "Kano", "Tarauni", "Teaching Hospital", 30, 12, 80, 20, 2.9, 58, "High"),
        ("f2", "General Hospital Ikeja", "Lagos", "Ikeja", "Hospital", 25, 10, 40, 8, 3.1, 40, "Medium"),
        ("f3", "Primary Health Center Nassarawa", "Kano", "Nassarawa", "Primary Health Center", 10, 3, 5, 1, 3.6, 5, "Low"),
        ("f4", "Clinique Sainte-Thérèse Ikeja", "Lagos", "Ikeja", "Clinic", 8, 2, 0, 0, None, 0, "Low"),
        ("f5", "National Hospital Abuja", "FCT", "Abuja Municipal", "Hospital", 20, 9, 12, 6, 2.5, 12, "Medium"),
    ]
    for fid, name, state, lga, ftype, patients, records, visits, urgent, avg, days, band in rows:
        db.execute(
            "insert into analytics.facility_performance values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, "
            "'2026-11-01', '2026-11-14', %s, case when %s > 0 then round(%s::numeric / %s, 2) end, %s, "
            "'2026-11-15T02:10:00Z')",
            (fid, name, state, lga, ftype, patients, records, visits, urgent, avg, days, days, visits, days or 1, band),
        )
    return rows
