"""The demo generator: deterministic, shaped like the contracts, untidy like real exports, and bad
exactly where it says it is.

The files are parsed back here with the csv module and checked against the contract YAML with rules
written out in this file, not borrowed from the generator or the loader.
"""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from datetime import date
from pathlib import Path

import pytest
import yaml

from elt.demo import BadRow, DemoDrop, generate_medilink_drops

CONTRACTS = Path(__file__).resolve().parents[2] / "elt" / "contracts"
KINDS = ("facilities", "patients", "triage_visits", "medical_records")
END = date(2026, 11, 15)  # a Sunday; with 14 days the drop starts on Monday 2026-11-02
FIRST = "2026-11-02"
# The contracts' default null spellings, compared case-insensitively after trimming.
NULLS = {"", "N/A", "NA", "-", "NULL"}
SMALLINT = (-32768, 32767)
UTF8_BOM = b"\xef\xbb\xbf"
NIGERIA = {"lat": (4.0, 14.0), "lon": (2.5, 15.0)}


def contract(kind: str) -> dict:
    return yaml.safe_load((CONTRACTS / f"medilink_{kind}.yml").read_text(encoding="utf-8"))


CONTRACT = {kind: contract(kind) for kind in KINDS}


def kind_of(key: str) -> str:
    return next(kind for kind in KINDS if re.fullmatch(rf"{kind}_\d{{4}}-\d{{2}}-\d{{2}}\.csv", key))


def decode(key: str, data: bytes) -> str:
    return data.decode("cp1252") if kind_of(key) == "facilities" else data.decode("utf-8-sig")


def parse(key: str, data: bytes) -> tuple[list[str], list[dict[str, str]]]:
    reader = csv.reader(io.StringIO(decode(key, data), newline=""))
    header = next(reader)
    return header, [dict(zip(header, row, strict=True)) for row in reader]


def parse_all(drop: DemoDrop) -> dict[str, list[dict[str, str]]]:
    return {key: parse(key, data)[1] for key, data in drop.files.items()}


def is_null(raw: str) -> bool:
    return raw.strip().upper() in NULLS


def typed(kind: str, value: str) -> object:
    """The value as the contract type, or ValueError when it is not castable."""
    if kind == "smallint":
        if not re.fullmatch(r"[+-]?\d+", value) or not SMALLINT[0] <= int(value) <= SMALLINT[1]:
            raise ValueError(value)
        return int(value)
    if kind == "double precision":
        return float(value)
    if kind == "date":
        # ISO dates only: 01/02/1990 is ambiguous between day-first and month-first exports.
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            raise ValueError(value)
        return date.fromisoformat(value)
    return value


def bound(kind: str, limit: object) -> object:
    return date.fromisoformat(str(limit)) if kind == "date" else limit


def broken_rules(column: dict, raw: str) -> set[str]:
    """The contract rules that one cell breaks."""
    value = raw.strip()
    if value.upper() in NULLS:
        return {"required"} if column.get("required") else set()
    kind = column.get("type", "text")
    try:
        number = typed(kind, value)
    except ValueError:
        return {"type"}
    broken = set()
    if column.get("allowed") and value.upper() not in {str(a).upper() for a in column["allowed"]}:
        broken.add("allowed")
    if column.get("min") is not None and number < bound(kind, column["min"]):
        broken.add("range")
    if column.get("max") is not None and number > bound(kind, column["max"]):
        broken.add("range")
    return broken


def violations(drop: DemoDrop) -> set[tuple[str, int, str, str]]:
    found = set()
    for key, rows in parse_all(drop).items():
        columns = CONTRACT[kind_of(key)]["columns"]
        for number, row in enumerate(rows, start=1):
            for column in columns:
                for rule in broken_rules(column, row[column["name"]]):
                    found.add((key, number, column["name"], rule))
    return found


def listed(drop: DemoDrop) -> set[tuple[str, int, str, str]]:
    return {(bad.key, bad.row, bad.column, bad.rule) for bad in drop.bad_rows}


def good_patients(drop: DemoDrop) -> Counter:
    """(facility, first, last) of the patient rows that pass the contract, as the loader would keep them."""
    bad = {(b.key, b.row) for b in drop.bad_rows}
    key = f"patients_{min(k[-14:-4] for k in drop.files)}.csv"
    return Counter(
        (row["facility_name"].strip(), row["first_name"].strip(), row["last_name"].strip())
        for number, row in enumerate(parse(key, drop.files[key])[1], start=1) if (key, number) not in bad
    )


@pytest.fixture(scope="module")
def drop() -> DemoDrop:
    return generate_medilink_drops(end_date=END)


@pytest.fixture(scope="module")
def rows(drop) -> dict[str, list[dict[str, str]]]:
    return parse_all(drop)


def of_kind(rows: dict[str, list[dict[str, str]]], kind: str) -> dict[str, list[dict[str, str]]]:
    return {key: value for key, value in rows.items() if kind_of(key) == kind}


# -- shape --------------------------------------------------------------------------------------------


def test_same_arguments_give_the_same_bytes_and_another_seed_does_not(drop):
    again = generate_medilink_drops(end_date=END, days=14, seed=42)
    assert again.files == drop.files and list(again.files) == list(drop.files)
    assert again.bad_rows == drop.bad_rows
    other = generate_medilink_drops(end_date=END, seed=43)
    assert set(other.files) == set(drop.files)
    assert other.files[f"patients_{FIRST}.csv"] != drop.files[f"patients_{FIRST}.csv"]
    assert sum(other.files[key] != data for key, data in drop.files.items()) >= len(drop.files) - 1


def test_facilities_and_patients_on_the_first_day_visits_and_records_every_day(drop):
    days = [f"2026-11-{day:02d}" for day in range(2, 16)]
    assert set(drop.files) == {f"facilities_{FIRST}.csv", f"patients_{FIRST}.csv"} | {
        f"{kind}_{day}.csv" for kind in ("triage_visits", "medical_records") for day in days}
    for key in drop.files:  # every key is picked up by exactly its own contract
        matching = [kind for kind in KINDS if re.search(CONTRACT[kind]["landing"]["key_pattern"], key)]
        assert matching == [kind_of(key)], key


def test_headers_are_the_contract_columns(drop):
    for key, data in drop.files.items():
        header, _ = parse(key, data)
        assert header == [column["name"] for column in CONTRACT[kind_of(key)]["columns"]], key


# -- bad rows -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "arguments",
    [
        {},
        {"seed": 7, "days": 30},
        {"seed": 3, "facilities": 24, "patients_per_facility": 40, "visits_per_day": (40, 90)},
        {"days": 1, "facilities": 3, "patients_per_facility": 4, "visits_per_day": (3, 5)},
        {"days": 2, "facilities": 1, "patients_per_facility": 1, "visits_per_day": (1, 1)},
        {"bad_rows": False},
    ],
    ids=["defaults", "seed7-30days", "large", "tiny", "minimal", "no-bad-rows"],
)
def test_listed_bad_rows_break_their_rule_and_every_other_row_passes_the_contract(arguments):
    drop = generate_medilink_drops(end_date=END, **arguments)
    assert violations(drop) == listed(drop)
    assert len(listed(drop)) == len(drop.bad_rows)  # one broken cell per bad row, none listed twice
    for key, data in drop.files.items():
        file_rows = parse(key, data)[1]
        bad = [b for b in drop.bad_rows if b.key == key]
        assert all(1 <= b.row <= len(file_rows) for b in bad)
        assert 3 * len(bad) <= len(file_rows), key  # at least two good rows per bad one


def test_the_default_drop_has_one_bad_row_per_rule_kind_spread_over_files(drop, rows):
    assert 3 <= len(drop.bad_rows) <= 6
    assert {(b.column, b.rule) for b in drop.bad_rows} == {
        ("triage_level", "range"), ("triage_level", "type"), ("dob", "type"), ("sex", "allowed"),
        ("facility_name", "required")}
    by_key = Counter(b.key for b in drop.bad_rows)
    assert len([key for key in by_key if key.startswith("triage_visits_")]) == 3
    for key, count in by_key.items():
        assert count / len(rows[key]) < 0.2, key
    cells = {(b.column, rows[b.key][b.row - 1][b.column]) for b in drop.bad_rows}
    assert cells == {("triage_level", "7"), ("triage_level", "high"), ("dob", "31/02/1990"), ("sex", "X"),
                     ("facility_name", "")}


def test_without_bad_rows_nothing_is_listed_and_nothing_breaks():
    drop = generate_medilink_drops(end_date=END, bad_rows=False)
    assert drop.bad_rows == [] and violations(drop) == set()


# -- encodings and untidiness -------------------------------------------------------------------------


def test_facilities_are_windows_1252_with_crlf(drop):
    data = drop.files[f"facilities_{FIRST}.csv"]
    with pytest.raises(UnicodeDecodeError):
        data.decode("utf-8")
    text = data.decode("cp1252")
    assert any(ord(char) > 127 for char in text)
    assert not data.startswith(UTF8_BOM)
    assert data.endswith(b"\r\n") and data.count(b"\n") == data.count(b"\r\n") == len(text.splitlines())


def test_patients_are_utf8_with_a_bom_and_crlf(drop):
    data = drop.files[f"patients_{FIRST}.csv"]
    assert data.startswith(UTF8_BOM)
    data.decode("utf-8")
    assert data.count(b"\n") == data.count(b"\r\n") > 1


def test_visits_and_records_are_utf8_with_lf(drop):
    for key, data in drop.files.items():
        if kind_of(key) in {"triage_visits", "medical_records"}:
            data.decode("utf-8")
            assert not data.startswith(UTF8_BOM) and b"\r" not in data, key


def test_cells_are_as_untidy_as_spreadsheet_exports(rows):
    cells = [value for file_rows in rows.values() for row in file_rows for value in row.values()]
    assert any(value != value.rstrip() and value.strip() for value in cells)  # trailing spaces
    assert "N/A" in cells and "" in cells
    states = [row["state"] for file_rows in of_kind(rows, "facilities").values() for row in file_rows]
    assert {state for state in states if state.isupper()} and {state for state in states if state.islower()}
    assert {state for state in states if state.istitle() and not state.isupper()}


def test_a_quoted_newline_and_comma_survive_a_csv_round_trip(drop, rows):
    records = of_kind(rows, "medical_records")
    notes = [(key, row["notes"]) for key, file_rows in records.items() for row in file_rows
             if "\n" in row["notes"] and "," in row["notes"]]
    assert notes
    key, note = notes[0]
    assert b'"' + note.split("\n")[0].encode() in drop.files[key]
    buffer = io.StringIO(newline="")
    csv.writer(buffer, lineterminator="\n").writerows([list(row.values()) for row in records[key]])
    again = list(csv.reader(io.StringIO(buffer.getvalue(), newline="")))
    assert again == [list(row.values()) for row in records[key]]
    assert len(records[key]) + 1 < drop.files[key].count(b"\n")  # more lines than records


# -- content ------------------------------------------------------------------------------------------


def test_facilities_are_real_places_in_nigeria(rows):
    facilities = rows[f"facilities_{FIRST}.csv"]
    assert len(facilities) == 12
    names = [row["name"].strip() for row in facilities]
    assert len(set(names)) == len(names)
    states = {row["state"].strip().upper() for row in facilities}
    assert len(states) >= 8
    assert {"LAGOS", "KANO", "FCT", "RIVERS", "OYO", "KADUNA", "ENUGU"} <= states
    assert {row["type"] for row in facilities} <= {"Hospital", "Primary Health Center", "Clinic", "Teaching Hospital"}
    for row in facilities:
        for axis, (low, high) in NIGERIA.items():
            assert low <= float(row[axis]) <= high
        assert row["lga"].strip()


def test_patients_are_unique_and_plausible(drop, rows):
    bad = {(b.key, b.row) for b in drop.bad_rows}
    key = f"patients_{FIRST}.csv"
    patients = [row for number, row in enumerate(rows[key], start=1) if (key, number) not in bad]
    assert len(rows[key]) == 12 * 25
    facility_names = {row["name"].strip() for row in rows[f"facilities_{FIRST}.csv"]}
    with_dob = Counter((p["facility_name"].strip(), p["first_name"], p["last_name"].strip(), p["dob"]) for p in rows[key])
    without_dob = Counter((p["facility_name"].strip(), p["first_name"].lower(), p["last_name"].strip().lower())
                          for p in rows[key])
    assert max(with_dob.values()) == 1 and max(without_dob.values()) == 1
    for patient in patients:
        assert patient["facility_name"].strip() in facility_names
        assert patient["sex"] in {"M", "F"}
        assert date(1940, 1, 1) <= date.fromisoformat(patient["dob"]) <= date(2024, 12, 31)
        assert is_null(patient["phone"]) or re.fullmatch(r"\+234[789]\d{9}", patient["phone"])
    assert sum(not is_null(p["phone"]) for p in patients) > 0.8 * len(patients)


def test_every_visit_and_record_names_exactly_one_patient(drop, rows):
    bad = {(b.key, b.row) for b in drop.bad_rows}
    patients = good_patients(drop)
    insensitive = Counter((f, first.lower(), last.lower()) for (f, first, last), n in patients.items() for _ in range(n))
    checked = 0
    for key, file_rows in rows.items():
        if kind_of(key) not in {"triage_visits", "medical_records"}:
            continue
        for number, row in enumerate(file_rows, start=1):
            if (key, number) in bad:
                continue
            name = (row["facility_name"].strip(), row["patient_first_name"].strip(), row["patient_last_name"].strip())
            assert patients[name] == 1, (key, number)
            assert insensitive[(name[0], name[1].lower(), name[2].lower())] == 1, (key, number)
            checked += 1
    assert checked > 200


def test_a_patient_is_triaged_at_most_once_a_day(rows):
    for key, file_rows in of_kind(rows, "triage_visits").items():
        names = Counter((r["facility_name"].strip(), r["patient_first_name"], r["patient_last_name"]) for r in file_rows
                        if r["facility_name"].strip())
        assert max(names.values()) == 1, key


def test_visit_volumes_vary_by_day_and_facility(rows):
    triage = of_kind(rows, "triage_visits")
    per_day = {key[-14:-4]: len(file_rows) for key, file_rows in sorted(triage.items())}
    assert all(8 <= count <= 30 for count in per_day.values())
    weekday = [n for day, n in per_day.items() if date.fromisoformat(day).weekday() < 5]
    weekend = [n for day, n in per_day.items() if date.fromisoformat(day).weekday() >= 5]
    assert sum(weekday) / len(weekday) > 1.5 * sum(weekend) / len(weekend)
    per_facility = Counter(r["facility_name"].strip() for file_rows in triage.values() for r in file_rows)
    per_facility.pop("", None)
    assert max(per_facility.values()) > 50 and min(per_facility.values()) < 10


def test_triage_cells_look_clinical(rows):
    visits = [row for file_rows in of_kind(rows, "triage_visits").values() for row in file_rows]
    levels = Counter(row["triage_level"] for row in visits)
    assert set(levels) - {"7", "high"} == {"1", "2", "3", "4", "5"}
    assert levels["3"] + levels["4"] > 0.5 * len(visits)
    vitals = [row["vital_signs"] for row in visits if not is_null(row["vital_signs"])]
    with_bp = [v for v in vitals if re.search(r"\bBP: \d{2,3}/\d{2,3}\b", v)]
    assert 0.5 * len(vitals) < len(with_bp) < len(vitals)
    assert all(re.search(r"\bHR: \d+", v) for v in vitals)
    assert any(";" in row["conditions"] for row in visits) and any(";" in row["recommendations"] for row in visits)
    assert all(item.strip() for row in visits for item in row["conditions"].split(";") if row["conditions"])


def test_a_few_medical_records_a_day_of_the_four_types(rows):
    records = of_kind(rows, "medical_records")
    assert all(3 <= len(file_rows) <= 8 for file_rows in records.values())
    types = Counter(row["record_type"] for file_rows in records.values() for row in file_rows)
    assert set(types) == {"Consultation", "Lab Result", "Prescription", "Imaging"}


def test_more_days_keep_the_same_facilities_and_patients():
    short = generate_medilink_drops(end_date=date(2026, 11, 8), days=7)
    long = generate_medilink_drops(end_date=date(2026, 11, 15), days=14)
    assert short.files[f"patients_{FIRST}.csv"] == long.files[f"patients_{FIRST}.csv"]
    assert short.files[f"facilities_{FIRST}.csv"] == long.files[f"facilities_{FIRST}.csv"]


@pytest.mark.parametrize(
    "arguments",
    [{"days": 0}, {"facilities": 0}, {"facilities": 1000}, {"patients_per_facility": 0},
     {"visits_per_day": (0, 5)}, {"visits_per_day": (9, 8)}],
)
def test_impossible_arguments_are_refused(arguments):
    with pytest.raises(ValueError):
        generate_medilink_drops(end_date=END, **arguments)


def test_bad_row_is_a_plain_value():
    assert BadRow("k.csv", 1, "sex", "allowed") == BadRow("k.csv", 1, "sex", "allowed")
