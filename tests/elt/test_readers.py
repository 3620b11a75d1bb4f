"""The reader interface (elt/readers/base.py) and its registry: every registered reader gives the period its key
names or its content states, its tables with their rows, refuses a bad file with the loader's rule, and says
which contracts it can read; and nothing outside the registry asks which reader or format a contract has.

Expected periods, tables and row counts come from the inputs written here (or the KH03 fixture's spec), counted
with the csv module or openpyxl, never from the reader under test.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import subprocess
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import openpyxl
import pytest
import yaml

from elt.config import get_settings
from elt.contracts import REVISION_NEEDS, Contract, ContractError, load_contracts
from elt.readers import READERS, check_contract, reader_for
from elt.readers.base import BytesSource, Period, Reader
from elt.readers.csv_header import FileRejected
from elt.readers.table import CsvReader
from elt.readers.validate import validate_bytes
from elt.readers.workbook_guard import DEFAULT_LIMITS, WorkbookLimits
from tests.conftest import REPO, shared_data
from tests.elt.kh03_fixtures import DEFAULT_TRUSTS, SPECIALTIES, Kh03Spec, build_kh03
from tests.elt.test_spreadsheets import CONTRACT as SHEET_CONTRACT
from tests.elt.test_spreadsheets import HEADER as SHEET_HEADER
from tests.elt.test_spreadsheets import workbook

CONTRACTS = load_contracts(get_settings().contracts_dir)
SECTORS = 5  # Total and the four sectors: each trust, region and England row is one row per sector


def csv_rows(data: bytes) -> int:
    """Data rows of a CSV, counted by the csv module (the header is not one)."""
    return len(list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))) - 1


@dataclass(frozen=True)
class Case:
    """One reader's good file (with its key, the period and the tables it must give) and a bad one."""

    contract: Contract
    key: str  # below the landing prefix
    data: bytes
    period: Period | None  # what the key names, or the content states
    tables: dict[str, int]  # table name -> data rows
    bad: bytes
    bad_rule: str


PATIENTS = (b"facility_name,first_name,last_name,sex,dob,phone\r\n"
            b"General Hospital,Ada,Obi,F,1990-02-28,+2348012345678\r\n"
            b"General Hospital,John,Doe,M,1985-11-30,\r\n"
            b"Clinic B,Jane,Roe,F,2001-07-04,+2348000000000\r\n")
SHEET = workbook([SHEET_HEADER, ["General Hospital", None, 120, 6.6018, "1999-05-01"], ["Clinic B", None, 8, 12.5, None]])
TRUSTS, REGIONS = len(DEFAULT_TRUSTS), len({trust.region for trust in DEFAULT_TRUSTS})

CASES = {
    "CsvReader": Case(
        CONTRACTS["medilink_patients"], "patients_2026-11-03.csv", PATIENTS,
        Period(date(2026, 11, 3), date(2026, 11, 3), "2026-11-03", "key"), {"main": 3},
        b"facility,first,last\nA,B,C\n", "unexpected_columns"),
    "WorkbookReader": Case(
        Contract.model_validate(yaml.safe_load(SHEET_CONTRACT)), "facilities_2026-11-20.xlsx", SHEET,
        Period(date(2026, 11, 20), date(2026, 11, 20), "2026-11-20", "key"), {"main": 2},
        workbook([["Not", "the", "header"], ["a", "b", "c"]]), "missing_header"),
    "Kh03Reader": Case(
        # The fixture's workbook is July to September 2020 (2020-21 Q2), published 19th November 2020; its key
        # names no period.
        CONTRACTS["nhs_kh03_overnight"], "Beds-Open-Overnight-Web_File-Final.xlsx", build_kh03(),
        Period(date(2020, 7, 1), date(2020, 9, 30), "2020-21 Q2", "content", published_on=date(2020, 11, 19)),
        # trust sheet: England and every trust; region sheet: every region; specialty: trust x specialty
        {"trust_sector": (1 + TRUSTS) * SECTORS, "region_sector": REGIONS * SECTORS,
         "specialty": TRUSTS * len(SPECIALTIES)},
        build_kh03(Kh03Spec(period_text=None, year=None, period_end=None)), "missing_period"),
}


def test_every_registered_reader_has_a_case():
    assert {type(reader).__name__ for reader in READERS} == set(CASES)


@pytest.mark.parametrize("reader", READERS, ids=lambda reader: type(reader).__name__)
def test_the_registry_gives_each_reader_its_contracts(reader: Reader):
    case = CASES[type(reader).__name__]
    assert reader_for(case.contract) is reader
    assert reader.accepts(case.contract) is None
    check_contract(case.contract)
    assert case.contract.format in reader.extensions


@pytest.mark.parametrize("reader", READERS, ids=lambda reader: type(reader).__name__)
def test_period_from_the_key_or_the_content(reader: Reader):
    case = CASES[type(reader).__name__]
    named = reader.period(case.contract, case.key)
    read = reader.tables(case.contract, BytesSource(case.key, case.data), limits=DEFAULT_LIMITS)
    if reader.states_period:
        assert (named, read.period) == (None, case.period)
    else:
        assert (named, read.period) == (case.period, None)


@pytest.mark.parametrize("reader", READERS, ids=lambda reader: type(reader).__name__)
def test_tables_and_their_rows(reader: Reader):
    case = CASES[type(reader).__name__]
    read = reader.tables(case.contract, BytesSource(case.key, case.data), limits=DEFAULT_LIMITS)
    assert {table.name: csv_rows(b"".join(table.chunks())) for table in read.tables} == case.tables
    # a table can be read twice (the loader's second try, as Windows-1252) and gives the same bytes
    assert [b"".join(table.chunks()) for table in read.tables] == [b"".join(table.chunks()) for table in read.tables]
    # each table goes to its own raw table
    assert len({table.contract.target_table for table in read.tables}) == len(read.tables)
    if read.sha256 is not None:  # a workbook: its own bytes' hash, so the same workbook again is a duplicate
        assert read.sha256 == hashlib.sha256(case.data).hexdigest()


@pytest.mark.parametrize("reader", READERS, ids=lambda reader: type(reader).__name__)
def test_checks_pass_a_good_file_and_refuse_a_bad_one_with_the_loaders_rule(reader: Reader):
    case = CASES[type(reader).__name__]
    stated = reader.checks(case.contract, case.data, name=case.key, limits=DEFAULT_LIMITS)
    assert stated == (case.period if reader.states_period else None)
    with pytest.raises(FileRejected) as refused:
        reader.checks(case.contract, case.bad, name="bad", limits=DEFAULT_LIMITS)
    assert refused.value.rule == case.bad_rule
    if isinstance(reader, CsvReader):  # streamed as it is: the loader's COPY refuses it (tests/elt/test_ingest.py)
        return
    with pytest.raises(FileRejected) as read_refused:
        reader.tables(case.contract, BytesSource("bad", case.bad), limits=DEFAULT_LIMITS)
    assert read_refused.value.rule == case.bad_rule


@pytest.mark.parametrize("reader", [r for r in READERS if not r.states_period], ids=lambda r: type(r).__name__)
def test_a_key_naming_a_date_that_does_not_exist_is_a_bad_period(reader: Reader):
    case = CASES[type(reader).__name__]
    impossible = re.sub(r"\d{4}-\d{2}-\d{2}", "2026-02-30", case.key)
    with pytest.raises(FileRejected) as refused:
        reader.period(case.contract, impossible)
    assert refused.value.rule == "bad_period" and refused.value.message.endswith("(in the key)")


def test_a_workbook_over_the_size_limit_is_refused_before_it_is_read():
    class Unread(BytesSource):
        def read(self) -> bytes:
            raise AssertionError("read although too large")

    for reader_name in ("WorkbookReader", "Kh03Reader"):
        case = CASES[reader_name]
        limits = WorkbookLimits(max_file_bytes=len(case.data) - 1)
        with pytest.raises(FileRejected) as refused:
            reader_for(case.contract).tables(case.contract, Unread("big.xlsx", case.data), limits=limits)
        assert refused.value.rule == "workbook_too_large"


def test_what_a_reader_does_not_accept():
    kh03 = CONTRACTS["nhs_kh03_overnight"]
    table_reader = reader_for(CONTRACTS["medilink_patients"])
    assert "extra_tables" in table_reader.accepts(kh03)
    # the KH03 reader fills the tables it knows, with their columns
    renamed = kh03.model_copy(update={"extra_tables": [kh03.extra_tables[0].model_copy(update={"name": "beds"})]})
    assert "region_sector, specialty" in reader_for(kh03).accepts(renamed)
    fewer = kh03.model_copy(update={"columns": kh03.columns[:-1]})
    assert "trust_sector table has the columns" in reader_for(kh03).accepts(fewer)


def _contracts_dir(tmp_path: Path, name: str, changes: dict) -> Path:
    folder = tmp_path / "contracts"
    folder.mkdir()
    raw = yaml.safe_load((REPO / "elt" / "contracts" / name).read_text())
    raw.update(changes)
    (folder / name).write_text(yaml.safe_dump(raw))
    return folder


@pytest.mark.parametrize(("name", "changes", "words"), [
    ("medilink_patients.yml", {"reader": "claims_v2"}, "reader 'claims_v2' does not read format 'csv'"),
    ("medilink_patients.yml", {"reader": "kh03"}, "reader 'kh03' does not read format 'csv'"),
    ("nhs_kh03_overnight.yml", {"reader": "table"}, "extra_tables need a reader that fills several tables"),
    # a revision needs a period known before the load: the table reader's files do not state theirs
    ("medilink_facilities.yml", {"revision_role": "admin", "period": {"supersede": True}}, REVISION_NEEDS),
])
def test_load_contracts_refuses_a_contract_its_reader_cannot_read_naming_the_file(tmp_path, name, changes, words):
    with pytest.raises(ContractError) as refused:
        load_contracts(_contracts_dir(tmp_path, name, changes))
    assert str(refused.value).startswith(f"{name}: ") and words in str(refused.value)


def test_a_kh03_contract_may_have_a_revision_role_without_a_key_period(tmp_path):
    contracts = load_contracts(_contracts_dir(tmp_path, "nhs_kh03_overnight.yml", {}))
    assert contracts["nhs_kh03_overnight"].revision_role == "admin"
    assert contracts["nhs_kh03_overnight"].period.key_date_pattern is None


# --- elt validate on NHS England's own workbooks gives what it gave before the reader interface ------------------
def _kh03_rows_by_openpyxl(path: Path) -> int:
    """The rows the loader stores for a real workbook, counted with openpyxl: per trust and per region one row per
    sector, England's row once (five sectors) when a sector sheet has it, one row per trust and specialty column."""
    book = openpyxl.load_workbook(path, read_only=True)
    rows = 0
    for sheet, per_row in (("NHS Trust by Sector", SECTORS), ("Region by Sector", SECTORS),
                           ("Occupied by Specialty", None)):
        if sheet not in book.sheetnames:
            continue
        cells = [list(row) for row in book[sheet].iter_rows(values_only=True)]
        header_at = next(i for i, row in enumerate(cells) if "Year" in row and "Period End" in row)
        header = cells[header_at]
        body = [row for row in cells[header_at + 1:] if any(v not in (None, "") for v in row) and "England" not in row]
        if per_row is None:  # one row per specialty column ("100 General Surgery")
            per_row = sum(1 for v in header if isinstance(v, str) and re.match(r"\d{3} ", v))
        rows += len(body) * per_row
    has_sector_sheet = {"NHS Trust by Sector", "Region by Sector"} & set(book.sheetnames)
    return rows + (SECTORS if has_sector_sheet else 0)


# (file, rows read, period) as `elt validate` reported them on main at e72a301, before the reader interface:
# 2020-21 Q1 and Q2 each have 195 trusts (5 sectors + England's 5 = 980), 7 regions (35) and 195 trusts x 76
# specialties (14,820): 15,835; the 2025-26 Q3 workbook has only its region sheet: 7 regions and England, 5 sectors.
KH03_BEFORE = [
    ("2021-Q1-Beds-Open-Overnight-Web_File-Final-DE5WC.xlsx", 15835,
     {"start": "2020-04-01", "end": "2020-06-30", "label": "2020-21 Q1", "source": "workbook"}),
    ("Beds-Open-Overnight-Web_File-Final-DE5WC.xlsx", 15835,
     {"start": "2020-07-01", "end": "2020-09-30", "label": "2020-21 Q2", "source": "workbook"}),
    ("Beds-Open-Overnight-Web_File-Q3-2025-26_duplicate.xlsx", 40,
     {"start": "2025-10-01", "end": "2025-12-31", "label": "2025-26 Q3", "source": "workbook"}),
]


@pytest.mark.parametrize(("name", "rows", "period"), KH03_BEFORE, ids=[case[0] for case in KH03_BEFORE])
def test_elt_validate_counts_real_kh03_workbooks_as_before(name, rows, period):
    path = shared_data("kh03", name)
    report = validate_bytes(CONTRACTS["nhs_kh03_overnight"], path.read_bytes(), name=name)
    assert (report.status, report.rows_read, report.rows_valid, report.rows_rejected) == ("valid", rows, rows, 0)
    assert report.period == period
    assert (report.rejects, report.errors) == ([], [])
    assert rows == _kh03_rows_by_openpyxl(path)


# --- nothing outside the registry asks which reader a contract has ---------------------------------------------
def test_only_the_registry_branches_on_the_reader():
    found = subprocess.run(["grep", "-rn", r"reader ==\|reader !=", "elt", "backend"], cwd=REPO,
                           capture_output=True, text=True).stdout
    assert {line.split(":", 1)[0] for line in found.splitlines()} <= {"elt/readers/__init__.py"}, found


def test_only_readers_look_at_a_contracts_format():
    found = subprocess.run(["grep", "-rn", r"contract\.format", "elt", "backend", "--include=*.py"], cwd=REPO,
                           capture_output=True, text=True).stdout
    outside = [line for line in found.splitlines() if not line.startswith("elt/readers/")]
    assert outside == [], "\n".join(outside)
