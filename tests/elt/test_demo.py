"""The demo generator: deterministic, contract-shaped, and bad exactly where it says it is."""

from __future__ import annotations

import csv
import io
from datetime import date
from pathlib import Path

import pytest
import yaml

from elt.demo import generate_medilink_drops

CONTRACTS = Path(__file__).resolve().parents[2] / "elt" / "contracts"
END = date(2026, 11, 14)


@pytest.fixture(scope="module")
def drop():
    return generate_medilink_drops(end_date=END, days=14, seed=3)


def contract_for(key: str) -> dict:
    kind = key.rsplit("_", 1)[0]
    return yaml.safe_load((CONTRACTS / f"medilink_{kind}.yml").read_text())


def parse(key: str, data: bytes) -> tuple[list[str], list[dict]]:
    text = data.decode("cp1252") if key.startswith("facilities") else data.decode("utf-8-sig")
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader)
    return header, [dict(zip(header, row, strict=True)) for row in reader]


def broken_rules(column: dict, raw: str) -> set[str]:
    """The contract rules a value breaks, checked here independently of the loader's SQL."""
    value = raw.strip()
    if value.upper() in {"", "N/A", "NA", "-", "NULL"}:
        return {"required"} if column.get("required") else set()
    kind, broken = column.get("type", "text"), set()
    if kind == "smallint":
        if not value.lstrip("-").isdigit():
            return {"type"}
        number = int(value)
    elif kind == "double precision":
        number = float(value)
    elif kind == "date":
        try:
            number = date.fromisoformat(value)
        except ValueError:
            return {"type"}
        column = {**column, "min": date.fromisoformat(str(column["min"])) if "min" in column else None}
    else:
        number = None
    if number is not None and column.get("min") is not None and number < column["min"]:
        broken.add("range")
    if number is not None and column.get("max") is not None and number > column["max"]:
        broken.add("range")
    if column.get("allowed") and value.upper() not in {a.upper() for a in column["allowed"]}:
        broken.add("allowed")
    return broken


def test_same_arguments_give_the_same_bytes_and_another_seed_does_not(drop):
    assert generate_medilink_drops(end_date=END, days=14, seed=3).files == drop.files
    assert generate_medilink_drops(end_date=END, days=14, seed=4).files != drop.files


def test_one_file_per_kind_and_day(drop):
    assert sum(k.startswith("triage_visits_") for k in drop.files) == 14
    assert sum(k.startswith("medical_records_") for k in drop.files) == 14
    assert set(k for k in drop.files if k.startswith(("facilities", "patients"))) == {
        "facilities_2026-11-01.csv", "patients_2026-11-01.csv"}


def test_headers_match_the_contracts(drop):
    for key, data in drop.files.items():
        header, _ = parse(key, data)
        assert header == [c["name"] for c in contract_for(key)["columns"]], key


def test_bad_rows_are_exactly_the_rows_that_break_a_rule(drop):
    found = set()
    for key, data in drop.files.items():
        columns = {c["name"]: c for c in contract_for(key)["columns"]}
        _, rows = parse(key, data)
        for number, row in enumerate(rows, start=1):
            for name, value in row.items():
                for rule in broken_rules(columns[name], value):
                    found.add((key, number, name, rule))
    assert found == {(b.key, b.row, b.column, b.rule) for b in drop.bad_rows}
    assert {b.rule for b in drop.bad_rows} == {"required", "type", "range", "allowed"}


def test_encodings_are_what_spreadsheet_exports_produce(drop):
    facilities = drop.files["facilities_2026-11-01.csv"]
    with pytest.raises(UnicodeDecodeError):
        facilities.decode("utf-8")
    assert "Thérèse" in facilities.decode("cp1252") and b"\r\n" in facilities
    assert drop.files["patients_2026-11-01.csv"].startswith(b"\xef\xbb\xbf")


def test_realistic_places_and_resolvable_visits(drop):
    _, facilities = parse("facilities_2026-11-01.csv", drop.files["facilities_2026-11-01.csv"])
    assert len({f["state"].strip().lower() for f in facilities}) >= 8
    assert {f["state"].strip() for f in facilities} & {"LAGOS", "lagos"}  # mixed case, as exports spell it
    _, patients = parse("patients_2026-11-01.csv", drop.files["patients_2026-11-01.csv"])
    names = [(p["facility_name"], p["first_name"], p["last_name"]) for p in patients]
    bad = {(b.key, b.row) for b in drop.bad_rows}
    for key, data in drop.files.items():
        if key.startswith("triage_visits"):
            for number, row in enumerate(parse(key, data)[1], start=1):
                if (key, number) not in bad:
                    assert names.count((row["facility_name"], row["patient_first_name"], row["patient_last_name"])) == 1


def test_a_quoted_newline_survives_the_round_trip(drop):
    notes = [row["notes"] for key, data in drop.files.items() if key.startswith("medical_records")
             for row in parse(key, data)[1]]
    assert any("\n" in note for note in notes)
