"""Deterministic, realistic Medilink drops for demos, tests and benchmarks.

The same arguments always give byte-identical files, so a test can compute its expected figures from
the files and compare them with what the warehouse serves. The files look like real exports: real
Nigerian states and LGAs, state names in mixed case, a Windows-1252 facilities file with CRLF line ends,
a UTF-8 patients file with a BOM, `N/A` and empty optional cells, a quoted newline, and a few
deliberately bad rows (listed in `DemoDrop.bad_rows`) that the contracts must reject.
"""

from __future__ import annotations

import csv
import io
import random
from dataclasses import dataclass
from datetime import date, timedelta

# (state, LGA, latitude, longitude): real LGAs, coordinates near their headquarters.
LOCATIONS = [
    ("Lagos", "Ikeja", 6.6018, 3.3515), ("Lagos", "Surulere", 6.5000, 3.3500), ("Lagos", "Epe", 6.5841, 3.9834),
    ("Kano", "Nassarawa", 12.0000, 8.5500), ("Kano", "Tarauni", 11.9700, 8.5600),
    ("FCT", "Abuja Municipal", 9.0579, 7.4951), ("FCT", "Gwagwalada", 8.9430, 7.0830),
    ("Rivers", "Port Harcourt", 4.8156, 7.0498), ("Oyo", "Ibadan North", 7.4000, 3.9000),
    ("Kaduna", "Kaduna North", 10.5300, 7.4400), ("Enugu", "Enugu North", 6.4500, 7.5000),
    ("Borno", "Maiduguri", 11.8333, 13.1500), ("Anambra", "Onitsha North", 6.1600, 6.7800),
]
FACILITY_KINDS = [("General Hospital", "Hospital"), ("Primary Health Center", "Primary Health Center"),
                  ("Teaching Hospital", "Teaching Hospital"), ("Family Clinic", "Clinic")]
FIRST_NAMES = ["Adebayo", "Chinedu", "Aisha", "Ngozi", "Ibrahim", "Funmilayo", "Emeka", "Zainab", "Oluwaseun",
               "Chiamaka", "Musa", "Yetunde", "Ikechukwu", "Hauwa", "Tunde", "Amaka", "Sani", "Bisi", "Obinna", "Fatima"]
LAST_NAMES = ["Okafor", "Adeyemi", "Bello", "Eze", "Abubakar", "Ogunleye", "Nwosu", "Usman", "Balogun", "Okeke",
              "Yusuf", "Adeleke", "Onyeka", "Garba", "Afolabi", "Chukwu", "Danjuma", "Olawale", "Ibe", "Lawal"]
COMPLAINTS = ["Chest pain", "Fever", "Cough", "Headache", "Abdominal pain", "Shortness of breath", "Dizziness",
              "Vomiting", "Joint pain", "Rash"]
CONDITIONS = ["Hypertension", "Type 2 Diabetes", "Malaria", "Asthma", "Typhoid", "Sickle cell disease", "Anaemia"]
RECOMMENDATIONS = ["Follow-up in 2 weeks", "Refer to specialist", "Lab tests", "Rest and fluids", "Start medication"]
RECORD_TYPES = ["Consultation", "Lab Result", "Prescription", "Imaging"]
MEDICATIONS = ["Amlodipine 5mg", "Metformin 500mg", "Artemether-lumefantrine", "Paracetamol 500mg", "Salbutamol inhaler"]


@dataclass(frozen=True)
class BadRow:
    key: str
    row: int  # 1-based data row (the header is not counted)
    column: str
    rule: str  # required | type | range | allowed


@dataclass(frozen=True)
class DemoDrop:
    files: dict[str, bytes]  # key relative to 'medical_records/input/' -> file bytes
    bad_rows: list[BadRow]


def _csv(header: list[str], rows: list[list[str]], *, encoding: str, crlf: bool, bom: bool = False) -> bytes:
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\r\n" if crlf else "\n")
    writer.writerow(header)
    writer.writerows(rows)
    data = buffer.getvalue().encode(encoding)
    return (b"\xef\xbb\xbf" + data) if bom else data


def _vitals(rng: random.Random) -> str:
    parts = []
    if rng.random() < 0.8:
        parts.append(f"BP: {rng.randint(95, 180)}/{rng.randint(60, 110)}")
    parts.append(f"HR: {rng.randint(55, 120)}")
    if rng.random() < 0.5:
        parts.append(f"Temp: {rng.uniform(36.0, 39.5):.1f}")
    return ", ".join(parts)


def generate_medilink_drops(*, end_date: date, days: int = 14, seed: int = 42, facilities: int = 12,
                            patients_per_facility: int = 25, visits_per_day: tuple[int, int] = (8, 30),
                            bad_rows: bool = True) -> DemoDrop:
    """Daily Medilink drops for `days` days ending on `end_date` (facilities and patients on the first day)."""
    rng = random.Random(seed)
    first_day = end_date - timedelta(days=days - 1)
    files: dict[str, bytes] = {}
    bad: list[BadRow] = []

    # Facilities: unique names; states spelled the way exports spell them (LAGOS, Lagos, lagos).
    facility_rows = []
    for index in range(facilities):
        state, lga, lat, lon = LOCATIONS[index % len(LOCATIONS)]
        kind, ftype = FACILITY_KINDS[index % len(FACILITY_KINDS)]
        name = f"{kind} {lga}" if index < len(LOCATIONS) else f"{kind} {lga} {index}"
        if index == 3:
            name, ftype = f"Clinique Sainte-Thérèse {lga}", "Clinic"  # a cp1252 character
        spelled = [state.upper(), state, state.lower()][index % 3]
        facility_rows.append([name, spelled + (" " if index % 4 == 0 else ""), lga,
                              f"{lat + rng.uniform(-0.02, 0.02):.4f}", f"{lon + rng.uniform(-0.02, 0.02):.4f}",
                              ftype if index % 5 else "N/A"])
    files[f"facilities_{first_day}.csv"] = _csv(["name", "state", "lga", "lat", "lon", "type"], facility_rows,
                                                encoding="cp1252", crlf=True)

    # Patients: unique (facility, first, last) so every visit resolves to exactly one patient.
    patients: list[tuple[str, str, str]] = []
    patient_rows = []
    for facility in facility_rows:
        names = rng.sample([(f, last) for f in FIRST_NAMES for last in LAST_NAMES], patients_per_facility)
        for first, last in names:
            dob = date(1940, 1, 1) + timedelta(days=rng.randint(0, (date(2024, 12, 31) - date(1940, 1, 1)).days))
            phone = f"+234{rng.choice(['80', '81', '70', '90'])}{rng.randint(10_000_000, 99_999_999)}"
            patient_rows.append([facility[0], first, last, rng.choice("MF"), dob.isoformat(),
                                 phone if rng.random() < 0.9 else ""])
            patients.append((facility[0], first, last))
    patients_key = f"patients_{first_day}.csv"
    if bad_rows:
        patient_rows.append([facility_rows[1][0], "Kemi", "Adewale", "F", "31/02/1990", "+2348030000000"])
        bad.append(BadRow(patients_key, len(patient_rows), "dob", "type"))
        patient_rows.append([facility_rows[2][0], "Uche", "Obi", "X", "1985-04-12", ""])
        bad.append(BadRow(patients_key, len(patient_rows), "sex", "allowed"))
    files[patients_key] = _csv(["facility_name", "first_name", "last_name", "sex", "dob", "phone"], patient_rows,
                               encoding="utf-8", crlf=True, bom=True)

    # Each facility has its own size; weekends are quieter. Facility 0 is busy, the last one nearly idle.
    weights = [3.0 if i == 0 else 0.08 if i == facilities - 1 else rng.uniform(0.3, 1.5) for i in range(facilities)]
    for offset in range(days):
        day = first_day + timedelta(days=offset)
        low, high = visits_per_day
        count = rng.randint(low, high) // (2 if day.weekday() >= 5 else 1) or 1
        visit_rows, record_rows = [], []
        for _ in range(count):
            facility_index = rng.choices(range(facilities), weights=weights)[0]
            candidates = [p for p in patients if p[0] == facility_rows[facility_index][0]]
            facility_name, first, last = rng.choice(candidates)
            level = rng.choices([1, 2, 3, 4, 5], weights=[1, 3, 6, 5, 2])[0]
            visit_rows.append([
                facility_name, first, last, str(level), rng.choice(COMPLAINTS),
                _vitals(rng) if rng.random() < 0.95 else "N/A",
                ";".join(rng.sample(CONDITIONS, rng.randint(0, 2))),
                ";".join(rng.sample(RECOMMENDATIONS, rng.randint(1, 2))) + (" " if rng.random() < 0.1 else ""),
            ])
            if rng.random() < 0.4:
                record_rows.append([
                    facility_name, first, last, rng.choice(RECORD_TYPES), rng.choice(CONDITIONS),
                    rng.choice(["Medication", "Observation", "Referral", "-"]), rng.choice(MEDICATIONS),
                    "Patient stable" if rng.random() < 0.8 else "",
                ])
        visits_key = f"triage_visits_{day}.csv"
        if bad_rows and offset == 1:
            visit_rows.append([facility_rows[0][0], *patients[0][1:], "7", "Fever", "HR: 90", "", "Rest and fluids"])
            bad.append(BadRow(visits_key, len(visit_rows), "triage_level", "range"))
        if bad_rows and offset == 2:
            visit_rows.append([facility_rows[0][0], *patients[1][1:], "high", "Cough", "HR: 80", "", "Lab tests"])
            bad.append(BadRow(visits_key, len(visit_rows), "triage_level", "type"))
        if bad_rows and offset == 3:
            visit_rows.append(["", *patients[2][1:], "3", "Headache", "", "", "Rest and fluids"])
            bad.append(BadRow(visits_key, len(visit_rows), "facility_name", "required"))
        if offset == 0 and record_rows:
            record_rows[0][-1] = "Seen twice, then referred;\nfamily informed"  # a quoted newline and a comma
        files[visits_key] = _csv(
            ["facility_name", "patient_first_name", "patient_last_name", "triage_level", "chief_complaint",
             "vital_signs", "conditions", "recommendations"], visit_rows, encoding="utf-8", crlf=False)
        files[f"medical_records_{day}.csv"] = _csv(
            ["facility_name", "patient_first_name", "patient_last_name", "record_type", "diagnosis", "treatment",
             "medications", "notes"], record_rows or [[*patients[0], "Consultation", "", "", "", ""]],
            encoding="utf-8", crlf=False)
    return DemoDrop(files=files, bad_rows=bad)
