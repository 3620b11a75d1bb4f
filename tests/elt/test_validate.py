"""`elt validate` (pandas, no database) and the loader (SQL) give the same verdict on the same file."""

from __future__ import annotations

import json
from datetime import date

import pytest

from elt.cli import main
from elt.config import get_settings
from elt.contracts import load_contracts
from elt.demo import generate_medilink_drops
from elt.pipeline import ingest_file
from elt.readers.validate import validate_bytes

PREFIX = "medical_records/input/"
CONTRACTS = load_contracts(get_settings().contracts_dir)
DROP = generate_medilink_drops(end_date=date(2026, 11, 14), days=14, seed=11)
TRICKY = {
    "triage_visits_tricky.csv": (
        "\ufefffacility_name,patient_first_name,patient_last_name,triage_level,chief_complaint,vital_signs,conditions,recommendations\r\n"
        "General Hospital ,John,Doe,3,Chest pain,\"BP: 140/90, HR: 88\",Hypertension;Asthma,Rest\r\n"
        "General Hospital,Jane,Doe,7,Cough,N/A,,\r\n"
        "General Hospital,Ada,Obi,2,\"Fever\nand chills\",-,,\r\n"
        ",Ada,Obi,high,Fever,,,\r\n"
        "General Hospital,Ada,Obi,99999,Fever,,,\r\n"
        "General Hospital,Ada,Obi, 0 ,Fever,,,\r\n"
    ).encode(),
    "patients_tricky.csv": (
        b"facility_name,first_name,last_name,sex,dob,phone\n"
        b"A,B,C,m,1990-02-28,1\nA,D,E,X,1990-02-30,1\nA,F,G,,1899-12-31,\nA,H,I,F,n/a,\n"
        b"A,J,K,M,1990-1-5,\nA,L,M,F,2000-01-01,\n"
    ),
    "facilities_tricky.csv": "name,state,lga,lat,lon,type\nA,Lagos,Ikeja,6.6,3.3,Clinic\nB,Kano,X,abc,200,\nC,FCT,Y,-,NA,Hospital\n".encode("cp1252"),
}
CASES = {**{name: data for name, data in DROP.files.items()}, **TRICKY}


def contract_for(name: str):
    kind = name.rsplit("_", 1)[0] if not name.endswith("_tricky.csv") else name.removesuffix("_tricky.csv")
    return CONTRACTS[f"medilink_{kind}"]


@pytest.mark.parametrize("name", sorted(CASES))
def test_validate_reports_exactly_the_loaders_rejects(name, settings, store, db):
    report = validate_bytes(contract_for(name), CASES[name], name=name)
    store.put(PREFIX + name, CASES[name])
    outcome = ingest_file(PREFIX + name, settings=settings)
    loaded = db.execute("select row_number, column_name, rule from ops.load_rejects order by 1, 2, 3").fetchall()
    assert [(r["row"], r["column"], r["rule"]) for r in report.rejects] == loaded
    assert report.rows_read == outcome.rows_read
    assert report.rows_rejected == (outcome.rows_rejected or 0)
    expected = {"loaded": "valid" if not loaded else "has_rejects", "rejected": "refused"}[outcome.status]
    assert report.status == expected


@pytest.mark.parametrize(
    ("payload", "status", "rule"),
    [
        # read, but breaking a whole-file rule of the contract
        (b"", "off_contract", "empty_file"),
        (b"facility_name,first_name,last_name,sex,dob,phone\n", "off_contract", "no_rows"),
        (b"facility,first,last\nA,B,C\n", "off_contract", "unexpected_columns"),
        (b"facility_name,first_name,last_name,sex\nA,B,C,M\n", "off_contract", "missing_columns"),
        # not readable as CSV text at all
        (b"facility_name,first_name,last_name,sex,dob,phone\nA,\x81\x8d,C,M,1990-01-01,1\n", "unreadable",
         "undecodable_text"),
        (b"facility_name,first_name,last_name,sex,dob,phone\nA,B,C,M,1990-01-01,1,extra\n", "unreadable",
         "malformed_csv"),
    ],
)
def test_a_file_that_would_be_quarantined_gets_the_loaders_rule_and_says_whether_it_was_read(payload, status, rule):
    report = validate_bytes(CONTRACTS["medilink_patients"], payload)
    assert (report.status, report.errors[0]["rule"]) == (status, rule)


def test_cli_validate_prints_json_and_exits_by_verdict(tmp_path, capsys):
    path = tmp_path / "triage.csv"
    path.write_bytes(TRICKY["triage_visits_tricky.csv"])
    # 4 of 6 rows are bad: over the contract's 50% share, so the loader would refuse the whole file.
    assert main(["validate", str(path), "--drop-type", "medilink_triage_visits", "--format", "json"]) == 1
    body = json.loads(capsys.readouterr().out)
    assert (body["status"], body["rows_read"], body["rows_valid"], body["rows_rejected"]) == ("refused", 6, 2, 4)
    assert {"row": 2, "column": "triage_level", "rule": "range", "message": "triage_level must be at most 5"} in body["rejects"]
    assert main(["validate", str(path), "--drop-type", "medilink_patients"]) == 1
    clean = tmp_path / "facilities.csv"
    clean.write_bytes(DROP.files[next(k for k in DROP.files if k.startswith("facilities"))])
    assert main(["validate", str(clean), "--drop-type", "medilink_facilities"]) == 0
    assert ": valid (medilink_facilities v1)" in capsys.readouterr().out


def test_cli_validate_of_a_path_that_is_not_there_says_so_in_one_line(tmp_path, capsys):
    for path in (tmp_path / "no_such_file.csv", tmp_path):  # missing, and a folder
        assert main(["validate", str(path), "--drop-type", "medilink_patients"]) == 2
        captured = capsys.readouterr()
        assert captured.out == "" and "Traceback" not in captured.err
        assert captured.err.startswith(f"error: cannot read {path}: ") and captured.err.count("\n") == 1


# One file per drop type, named as it lands, with the period its name (or, for KH03, its content) establishes:
# (path below tmp_path, bytes, the expected period). Every contract must appear, so a new drop type gets a case.
def _kh03() -> bytes:
    from tests.elt.kh03_fixtures import build_kh03

    return build_kh03()  # July to September 2020


PERIOD_CASES = {
    "medilink_facilities": ("facilities_2026-11-01.csv", DROP.files["facilities_2026-11-01.csv"],
                            {"start": "2026-11-01", "end": "2026-11-01", "label": "2026-11-01", "source": "file name"}),
    "medilink_patients": ("in/patients_2026-11-03.csv", TRICKY["patients_tricky.csv"],
                          {"start": "2026-11-03", "end": "2026-11-03", "label": "2026-11-03", "source": "file name"}),
    "medilink_medical_records": ("medical_records_2026-11-14.csv", DROP.files["medical_records_2026-11-14.csv"],
                                 {"start": "2026-11-14", "end": "2026-11-14", "label": "2026-11-14", "source": "file name"}),
    "medilink_triage_visits": ("triage_visits_2026-10-31.csv", TRICKY["triage_visits_tricky.csv"],
                               {"start": "2026-10-31", "end": "2026-10-31", "label": "2026-10-31", "source": "file name"}),
    "claims": ("claims/provider=aetna/year=2024/month=02/batch.csv",
               b"claim_number,patient_id,provider_tax_id,claim_received_date,service_date,primary_diagnosis,procedure,"
               b"charge_amount\nA1,M1,P1,02/01/2024,01/31/2024,E11.9,99213,$100.00\n",
               {"start": "2024-02-01", "end": "2024-02-29", "label": "2024-02", "source": "file name"}),  # leap year
    "eligibility": ("eligibility/provider=acme/year=2023/month=12/members.csv",
                    b"member_id,payer,plan,start_date,end_date,birth_date,sex\nM1,acme,gold,2023-01-01,,1980-01-01,F\n",
                    {"start": "2023-12-01", "end": "2023-12-31", "label": "2023-12", "source": "file name"}),
    "nhs_kh03_overnight": ("Beds-Open-Overnight-Web_File-Final-DE5WC.xlsx", None,
                           {"start": "2020-07-01", "end": "2020-09-30", "label": "2020-21 Q2", "source": "workbook"}),
}


def test_every_drop_type_has_a_period_case():
    assert set(PERIOD_CASES) == set(CONTRACTS)


@pytest.mark.parametrize("drop_type", sorted(PERIOD_CASES))
def test_cli_validate_shows_the_reporting_period_the_file_establishes(drop_type, tmp_path, capsys):
    relative, data, period = PERIOD_CASES[drop_type]
    path = tmp_path / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if data is not None else _kh03())

    main(["validate", str(path), "--drop-type", drop_type, "--format", "json"])
    assert json.loads(capsys.readouterr().out)["period"] == period

    main(["validate", str(path), "--drop-type", drop_type])
    second_line = capsys.readouterr().out.splitlines()[1]
    dates = "" if period["start"] == period["label"] else f", {period['start']} to {period['end']}"
    assert second_line == f"  period: {period['label']}{dates} (from the {period['source']})"


def test_cli_validate_says_when_a_name_has_no_period_or_an_impossible_one(tmp_path, capsys):
    plain = tmp_path / "medical_records.csv"
    plain.write_bytes(DROP.files["medical_records_2026-11-14.csv"])
    assert main(["validate", str(plain), "--drop-type", "medilink_medical_records"]) == 0
    second_line = capsys.readouterr().out.splitlines()[1]
    assert second_line.startswith("  period: none in the file name") and second_line.endswith("the day the file lands")

    impossible = tmp_path / "patients_2026-02-30.csv"
    impossible.write_bytes(DROP.files["patients_2026-11-01.csv"])
    assert main(["validate", str(impossible), "--drop-type", "medilink_patients", "--format", "json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert (report["status"], report["errors"][0]["rule"], report["period"]) == ("off_contract", "bad_period", None)


def test_the_runbooks_table_of_quarantine_rules_says_which_ones_are_unreadable():
    """docs/operations.md explains every rule; its `kind` column must agree with UNREADABLE_RULES."""
    import re

    from elt.readers.csv_header import UNREADABLE_RULES
    from tests.conftest import REPO

    runbook = (REPO / "docs" / "operations.md").read_text()
    table = runbook[runbook.index("### Why a file was quarantined"):]
    kinds = {}
    for rules, kind in re.findall(r"^\| ([^|]+) \| (unreadable|off_contract|—) \|", table, flags=re.MULTILINE):
        for rule in re.findall(r"`([a-z_]+)`", rules):
            kinds[rule] = kind
    assert {rule for rule, kind in kinds.items() if kind == "unreadable"} == set(UNREADABLE_RULES)
    assert {"empty_file", "unexpected_columns", "no_rows", "bad_period", "load_error"} <= set(kinds)
