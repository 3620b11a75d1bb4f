"""GET /api/v1/rejects: one file's rejected rows (row, column, rule, message) for admins, and never the value a row
held. A hand-made triage file whose bad cells hold a patient's name is loaded through the real ingest into a fresh
warehouse; every answer the API gives about it (each JSON page, the CSV, the ledger, the refusals) is searched for
those names. The generic list tests (test_endpoints.py, test_openapi.py, test_fuzz.py) cover its paging, sorts,
filters and document on the built warehouse."""

from __future__ import annotations

import csv
import io

import pytest

from backend.auth import create_key
from elt.pipeline import discover_new_files, ingest_file

KEY = "medical_records/input/triage_visits_2026-11-01.csv"
HEADER = "facility_name,patient_first_name,patient_last_name,triage_level,chief_complaint,vital_signs,conditions,recommendations"
# Values a patient's row could hold, in cells that break the contract (triage_level must be a number from 1 to 5).
SECRETS = ("Adaeze Nwosu 1987", "Chukwuemeka Eze")
BODY = "\n".join([
    HEADER,
    "General Hospital,John,Doe,3,Chest pain,,,",  # row 1: good
    f"General Hospital,Ada,Obi,{SECRETS[0]},Cough,,,",  # row 2: triage_level not a number
    "General Hospital,Jane,Doe,7,Fever,,,",  # row 3: triage_level out of range
    f",Ada,Obi,{SECRETS[1]},Fever,,,",  # row 4: facility missing and triage_level not a number
    *(f"General Hospital,Ada,Obi,{level},Fever,,," for level in (2, 1, 5, 4, 3)),  # rows 5 to 9: good (3 of 9 bad:
]) + "\n"  # under the contract's 50%, so the file loads)
# Worked out by hand from the rows above: (row_number, column_name, rule), in the order of the rows.
EXPECTED = [(2, "triage_level", "type"), (3, "triage_level", "range"), (4, "facility_name", "required"),
            (4, "triage_level", "type")]


@pytest.fixture
def loaded(settings, store, db) -> int:
    """The file's ledger id, once loaded with its four rejects on three of its nine rows; the values are in the warehouse (raw_value)."""
    store.put(KEY, BODY.encode())
    (key,) = discover_new_files("medilink", settings=settings)
    outcome = ingest_file(key, settings=settings)
    assert (outcome.status, outcome.rows_rejected) == ("loaded", 3)
    held = {value for (value,) in db.execute("select raw_value from ops.load_rejects")}
    assert set(SECRETS) <= held  # what the API must not repeat is there to repeat
    return db.execute("select file_id from ops.file_ledger").fetchone()[0]


@pytest.fixture
def get(app, settings):
    client = app.test_client()
    keys = {role: create_key(settings.database_url, f"rejects {role}", role) for role in ("analyst", "clinician", "admin")}

    def call(path: str, role: str = "admin", **params):
        response = client.get(path, query_string=params, headers={"Authorization": f"Bearer {keys[role]}"})
        text = response.get_data(as_text=True)
        assert not [s for s in SECRETS if s in text or s.lower() in text.lower()], (path, params)
        return response

    return call


def test_an_admin_reads_a_files_rejects_page_by_page_without_their_values(loaded, get, db):
    rows, cursor = [], None
    while True:  # a reject a page: every row crosses a page boundary (and its cursor is searched too)
        body = get("/api/v1/rejects", file_id=loaded, limit=1, **({"cursor": cursor} if cursor else {})).get_json()
        rows += body["data"]
        cursor = body["meta"]["next_cursor"]
        assert body["meta"]["total"] == len(EXPECTED) and body["meta"]["sources"] == []
        if cursor is None:
            break
    assert [(r["row_number"], r["column_name"], r["rule"]) for r in rows] == EXPECTED
    assert all(r["file_id"] == loaded for r in rows)
    assert set(rows[0]) == {"file_id", "row_number", "column_name", "rule", "message", "reject_id"}
    # Each with the rule's words as the loader recorded them (the contract's, naming no value).
    assert [(r["reject_id"], r["message"]) for r in rows] == db.execute(
        "select reject_id, message from ops.load_rejects order by row_number, reject_id").fetchall()


def test_the_csv_and_the_filters_hold_the_same_rejects(loaded, get):
    response = get("/api/v1/rejects", file_id=loaded, format="csv")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    table = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert [(int(r["row_number"]), r["column_name"], r["rule"]) for r in table] == EXPECTED
    typed = get("/api/v1/rejects", file_id=loaded, rule="type", limit=10).get_json()["data"]
    assert [r["row_number"] for r in typed] == [2, 4]
    facility = get("/api/v1/rejects", file_id=loaded, column_name="facility_name").get_json()["data"]
    assert [(r["row_number"], r["rule"]) for r in facility] == [(4, "required")]
    backwards = get("/api/v1/rejects", file_id=loaded, sort="-row_number", limit=10).get_json()["data"]
    assert [r["row_number"] for r in backwards] == [4, 4, 3, 2]
    assert get("/api/v1/rejects", file_id=loaded + 1).get_json()["data"] == []  # no such file: no rejects
    # The ledger that names the file says how many rows it rejected, not what they held.
    (ledger,) = get("/api/v1/drops").get_json()["data"]
    assert (ledger["file_id"], ledger["rows_rejected"]) == (loaded, 3)
    get("/api/v1/drops", format="csv")


def test_the_file_id_is_required(loaded, get):
    response = get("/api/v1/rejects")
    assert response.status_code == 400 and "file_id" in response.get_json()["error"]["message"]


@pytest.mark.parametrize("role", ["analyst", "clinician"])
def test_only_admins_read_rejects(loaded, get, role):
    for params in ({"file_id": loaded}, {"file_id": loaded, "format": "csv"}):
        response = get("/api/v1/rejects", role, **params)
        assert response.status_code == 403 and "admin" in response.get_json()["error"]["message"]
        assert "data" not in response.get_json()


def test_the_document_lists_the_endpoint_for_admins_with_file_id_required(app):
    operation = app.test_client().get("/openapi.json").get_json()["paths"]["/api/v1/rejects"]["get"]
    assert operation["x-role"] == "admin"
    (file_id,) = [p for p in operation["parameters"] if p["name"] == "file_id"]
    assert file_id["required"] is True
    assert "raw_value" not in str(operation) and "value" not in {p["name"] for p in operation["parameters"]}
