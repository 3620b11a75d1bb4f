"""Workbook drops (.xlsx): the header found by its contents under a title block, spacer columns dropped,
cells read as a person reads them, then the same COPY, rules, ledger and quarantine as a CSV."""

from __future__ import annotations

import hashlib
import io
import shutil
from datetime import datetime
from pathlib import Path

import pytest
from openpyxl import Workbook

from elt.contracts import load_contracts
from elt.readers.csv_header import FileRejected
from elt.readers.spreadsheet import cell_text, spreadsheet_to_csv
from elt.readers.validate import validate_bytes

CONTRACT = """
drop_type: test_sheet_facilities
version: 1
description: A workbook drop used by the tests only.
source_system: tests
format: xlsx
spreadsheet: {sheet: Facilities, header_search_rows: 20}
landing:
  prefix: sheets/input/
  key_pattern: '^facilities[^/]*\\.xlsx$'
  archive_prefix: 'sheets/archive/{date:%Y-%m-%d}/'
  quarantine_prefix: 'sheets/quarantine/{date:%Y-%m-%d}/'
period:
  key_date_pattern: '(\\d{4}-\\d{2}-\\d{2})'
target_table: raw.test_sheet_facilities
natural_key: [name]
max_reject_share: 0.5
columns:
  - {name: name, type: text, required: true}
  - {name: beds, type: integer, min: 0}
  - {name: lat, type: double precision}
  - {name: opened, type: date}
"""
HEADER = ["Name", None, "Beds", "Lat", "Opened"]  # column C of the sheet is an empty spacer


def workbook(rows: list[list[object]], *, title: bool = True, sheet: str = "Facilities") -> bytes:
    """A sheet as spreadsheets come: notes first, a title block in column B, the table from column B on."""
    book = Workbook()
    book.active.title = "Notes"
    book.active["A1"] = "Read me first"
    data = book.create_sheet(sheet)
    if title:
        data["B2"], data["C2"] = "Title:", "Facilities of the network"
        data["B3"], data["C3"] = "Period:", "November 2026"
    for offset, row in enumerate(rows):
        for column, value in enumerate(row, start=2):
            if value is not None:
                data.cell(row=6 + offset, column=column, value=value)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


@pytest.fixture
def contracts_dir(tmp_path):
    folder = tmp_path / "contracts"
    shutil.copytree(Path(__file__).resolve().parents[2] / "elt" / "contracts", folder)
    (folder / "test_sheet_facilities.yml").write_text(CONTRACT)
    return folder


@pytest.fixture
def contract(contracts_dir):
    return load_contracts(contracts_dir)["test_sheet_facilities"]


@pytest.mark.parametrize(("value", "text"), [
    (None, ""), (12.0, "12"), (6.6018, "6.6018"), (-3.0, "-3"), (7, "7"), (True, "true"), ("  N/A ", "  N/A "),
    (datetime(2026, 11, 20), "2026-11-20"), (datetime(2026, 11, 20, 8, 30), "2026-11-20 08:30:00"),
])
def test_cells_read_as_a_person_reads_them(value, text):
    assert cell_text(value) == text


def test_the_header_is_found_under_the_title_block_and_spacers_are_dropped(contract):
    data = workbook([HEADER, ["General Hospital", None, 120, 6.6018, datetime(1999, 5, 1)],
                     [None, None, None, None, None],  # a blank row inside the table stays a row
                     ["Clinic B", None, 8.0, 12.5, "N/A"],
                     ["", None, "", "", ""]])  # a trailing blank row is dropped
    assert spreadsheet_to_csv(contract, data).decode() == (
        "Name,Beds,Lat,Opened\n"
        "General Hospital,120,6.6018,1999-05-01\n"
        ",,,\n"
        "Clinic B,8,12.5,N/A\n"
    )


def test_rows_are_numbered_from_the_header_and_checked_by_the_contract(contract):
    data = workbook([HEADER, ["General Hospital", None, 120, 6.6, datetime(1999, 5, 1)],
                     ["Clinic B", None, -4, "six", None]])
    report = validate_bytes(contract, data, name="facilities.xlsx")
    assert (report.status, report.rows_read, report.rows_valid) == ("has_rejects", 2, 1)
    assert sorted((r["row"], r["column"], r["rule"]) for r in report.rejects) == [(2, "beds", "range"), (2, "lat", "type")]


@pytest.mark.parametrize(("data", "rule", "words"), [
    (b"PK\x03\x04 this is no zip", "unreadable_workbook", "not a readable xlsx workbook"),
    (b"", "unreadable_workbook", "not a readable xlsx workbook"),
    (workbook([HEADER, ["A", None, 1, 6.6, None]], sheet="Sheet1"), "missing_sheet", "no sheet 'Facilities'; its sheets: Notes, Sheet1"),
    (workbook([["Name", None, "Bedz", "Lat", "Opened"], ["A", None, 1, 6.6, None]]), "missing_header",
     "the closest is row 6: header column D is not a column of contract test_sheet_facilities v1 (did you mean beds?)"),
    (workbook([["Something", "else"]], title=False), "missing_header", "no header row with the contract's columns"),
    (workbook([HEADER]), "no_rows", "has a header but no data rows"),
])
def test_broken_workbooks_are_refused_with_a_reason(contract, data, rule, words):
    with pytest.raises(FileRejected) as caught:
        spreadsheet_to_csv(contract, data, source_name="facilities.xlsx")
    assert caught.value.rule == rule and words in caught.value.message


def test_workbooks_load_once_and_broken_ones_are_quarantined(settings, store, db, contracts_dir):
    from elt.pipeline import discover_new_files, ingest_file, prepare

    settings = settings.model_copy(update={"contracts_dir": contracts_dir})
    prepare(settings)
    good = workbook([HEADER, ["General Hospital", None, 120, 6.6018, datetime(1999, 5, 1)],
                     ["Clinic B", None, -4, 12.5, None]])
    store.put("sheets/input/facilities_2026-11-20.xlsx", good)
    store.put("sheets/input/facilities_2026-11-21.xlsx", b"not a workbook")
    store.put("sheets/input/facilities_copy_2026-11-20.xlsx", good)  # the same bytes under another key
    outcomes = {key: ingest_file(key, settings=settings)
                for key in discover_new_files(drop_type="test_sheet_facilities", settings=settings)}

    loaded = outcomes["sheets/input/facilities_2026-11-20.xlsx"]
    assert (loaded.status, loaded.rows_read, loaded.rows_loaded, loaded.rows_rejected) == ("loaded", 2, 1, 1)
    assert loaded.moved_to.startswith("sheets/archive/")
    assert db.execute("select name, beds, lat, opened::text from raw.test_sheet_facilities__valid").fetchall() == [
        ("General Hospital", 120, 6.6018, "1999-05-01")]
    assert db.execute("select row_number, column_name, rule from ops.load_rejects").fetchall() == [(2, "beds", "range")]
    assert outcomes["sheets/input/facilities_copy_2026-11-20.xlsx"].status == "duplicate"
    broken = outcomes["sheets/input/facilities_2026-11-21.xlsx"]
    assert broken.status == "quarantined" and "unreadable_workbook" in broken.error
    assert broken.moved_to.startswith("sheets/quarantine/") and store.exists(broken.moved_to + ".error.json")
    # The ledger keeps the workbook's own hash and says it was read as a workbook.
    assert db.execute("select sha256, encoding from ops.file_ledger where file_id = %s", (loaded.file_id,)).fetchone() == (
        hashlib.sha256(good).hexdigest(), "XLSX")


@pytest.mark.parametrize("personal", [False, True])
def test_a_workbook_is_copied_to_a_temporary_file_only_for_a_contract_without_personal_data(
        contracts_dir, monkeypatch, personal):
    """The workbook check's uncompressed copy, which calamine reads faster, may reach the disk: the table reader
    asks for it only when the contract declares no personal data (decision 0012)."""
    import elt.readers.spreadsheet as spreadsheet

    if personal:
        text = (contracts_dir / "test_sheet_facilities.yml").read_text()
        (contracts_dir / "test_sheet_facilities.yml").write_text(
            text.replace("natural_key:", "personal_data: [name]\ndrop_role: clinician\nnatural_key:", 1))
    contract = load_contracts(contracts_dir)["test_sheet_facilities"]
    assert bool(contract.personal_data) is personal
    made = []
    real = spreadsheet.tempfile.TemporaryFile
    monkeypatch.setattr(spreadsheet.tempfile, "TemporaryFile", lambda *a, **k: made.append(1) or real(*a, **k))
    data = workbook([HEADER, ["General Hospital", None, 120, 6.6018, datetime(1999, 5, 1)]])
    assert spreadsheet_to_csv(contract, data).decode() == "Name,Beds,Lat,Opened\nGeneral Hospital,120,6.6018,1999-05-01\n"
    assert made == ([] if personal else [1])
