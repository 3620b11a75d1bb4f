"""Deterministic, realistic Medilink CSV drops for demos, local runs and tests.

The real clinic network cannot share patient data, yet the loader, the dbt models and the API only
show their worth on files that look like the real ones: a facilities list with state names in mixed
case and Windows-1252 text from a spreadsheet, a patients export with a BOM, daily triage files whose
volumes move with the weekday, lists inside cells, free-text vital signs, a quoted newline in a note,
and a handful of rows that break the contract on purpose. This module makes such drops from a seed, so
the same arguments always give the same bytes and a test can say exactly which rows must be rejected.

It only builds bytes in memory (names relative to the Medilink contracts' landing prefix); uploading them is
the caller's business (`elt demo`).
"""

from __future__ import annotations

import csv
import io
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

FACILITY_COLUMNS = ("name", "state", "lga", "lat", "lon", "type")
PATIENT_COLUMNS = ("facility_name", "first_name", "last_name", "sex", "dob", "phone")
TRIAGE_COLUMNS = (
    "facility_name", "patient_first_name", "patient_last_name", "triage_level",
    "chief_complaint", "vital_signs", "conditions", "recommendations",
)
RECORD_COLUMNS = (
    "facility_name", "patient_first_name", "patient_last_name", "record_type",
    "diagnosis", "treatment", "medications", "notes",
)


@dataclass(frozen=True)
class BadRow:
    """One deliberately broken cell: the file key, the 1-based data row (header not counted), the column
    and the contract rule it breaks ('required', 'type', 'range' or 'allowed')."""

    key: str
    row: int
    column: str
    rule: str


@dataclass(frozen=True)
class DemoDrop:
    """Generated files (key relative to the landing prefix -> bytes) and the rows made bad on purpose."""

    files: dict[str, bytes]
    bad_rows: list[BadRow]


@dataclass(frozen=True)
class _Facility:
    name: str
    state: str
    lga: str
    lat: float
    lon: float
    type: str


# Real facilities, or plausible ones named after real places; coordinates are those of the town or LGA.
# The first twelve cover nine states, the seven largest health markets among them.
_FACILITIES: tuple[_Facility, ...] = (
    _Facility("General Hospital Ikeja", "Lagos", "Ikeja", 6.6018, 3.3515, "Hospital"),
    _Facility("Primary Health Center Nassarawa", "Kano", "Nassarawa", 12.0014, 8.5503, "Primary Health Center"),
    _Facility("Maitama District Hospital", "FCT", "Abuja Municipal", 9.0833, 7.4951, "Hospital"),
    _Facility("Rivers State University Teaching Hospital", "Rivers", "Port Harcourt", 4.7774, 7.0134, "Teaching Hospital"),
    _Facility("University College Hospital Ibadan", "Oyo", "Ibadan North", 7.4013, 3.9036, "Teaching Hospital"),
    _Facility("Barau Dikko Teaching Hospital", "Kaduna", "Kaduna North", 10.5264, 7.4388, "Teaching Hospital"),
    _Facility("Primary Health Center Nsukka", "Enugu", "Nsukka", 6.8567, 7.3958, "Primary Health Center"),
    _Facility("Clinique Sainte-Thérèse Lekki", "Lagos", "Eti-Osa", 6.4474, 3.4723, "Clinic"),
    _Facility("General Hospital Onitsha", "Anambra", "Onitsha North", 6.1498, 6.7857, "Hospital"),
    _Facility("Aminu Kano Teaching Hospital", "Kano", "Tarauni", 11.9775, 8.5386, "Teaching Hospital"),
    _Facility("Primary Health Center Kubwa", "FCT", "Bwari", 9.1547, 7.3226, "Primary Health Center"),
    _Facility("Maiduguri Family Clinic", "Borno", "Maiduguri", 11.8333, 13.1500, "Clinic"),
    _Facility("Primary Health Center Rumuokoro", "Rivers", "Obio/Akpor", 4.8670, 6.9950, "Primary Health Center"),
    _Facility("Enugu State University Teaching Hospital", "Enugu", "Enugu North", 6.4413, 7.4988, "Teaching Hospital"),
    _Facility("Primary Health Center Sabon Gari", "Kaduna", "Sabon Gari", 11.1113, 7.7227, "Primary Health Center"),
    _Facility("General Hospital Ogbomoso", "Oyo", "Ogbomosho North", 8.1335, 4.2406, "Hospital"),
    _Facility("General Hospital Calabar", "Cross River", "Calabar Municipal", 4.9757, 8.3417, "Hospital"),
    _Facility("Primary Health Center Osogbo", "Osun", "Osogbo", 7.7710, 4.5560, "Primary Health Center"),
    _Facility("Central Hospital Benin", "Edo", "Oredo", 6.3350, 5.6037, "Hospital"),
    _Facility("Jos North Community Clinic", "Plateau", "Jos North", 9.8965, 8.8583, "Clinic"),
    _Facility("Primary Health Center Ilorin West", "Kwara", "Ilorin West", 8.4966, 4.5421, "Primary Health Center"),
    _Facility("Specialist Hospital Sokoto", "Sokoto", "Sokoto North", 13.0622, 5.2339, "Hospital"),
    _Facility("Surulere Family Clinic", "Lagos", "Surulere", 6.5005, 3.3581, "Clinic"),
    _Facility("Primary Health Center Gwagwalada", "FCT", "Gwagwalada", 8.9431, 7.0831, "Primary Health Center"),
)
MAX_FACILITIES = len(_FACILITIES)

# Busier facility types rank higher when shares of the visits are handed out; clinics and health
# centres mostly close at the weekend while hospitals keep their emergency departments open.
_TYPE_RANK = {"Teaching Hospital": 3.0, "Hospital": 2.0, "Clinic": 1.0, "Primary Health Center": 0.5}
_WEEKEND_FACTOR = {  # (Saturday, Sunday) share of a weekday's load
    "Teaching Hospital": (0.9, 0.8),
    "Hospital": (0.85, 0.7),
    "Clinic": (0.5, 0.15),
    "Primary Health Center": (0.4, 0.1),
}
# Where in visits_per_day the network's total for a weekday falls: Monday catches up on the weekend,
# Sunday is quiet.
_WEEKDAY_LOAD = (0.9, 0.75, 0.65, 0.62, 0.58, 0.3, 0.12)

_NAMES = {
    "yoruba": {
        "M": ("Adebayo", "Olumide", "Babatunde", "Oluwaseun", "Tunde", "Kehinde", "Femi", "Segun", "Ayodele",
              "Gbenga", "Kayode", "Yemi", "Damilola", "Rotimi", "Dapo"),
        "F": ("Funmilayo", "Adunni", "Folake", "Titilayo", "Yetunde", "Bukola", "Omolara", "Temitope", "Kemi",
              "Ronke", "Bisola", "Morenike", "Abimbola", "Iyabo", "Simisola"),
        "last": ("Adeyemi", "Ogunleye", "Adebayo", "Olaniyan", "Oyelaran", "Balogun", "Ogunbiyi", "Akinola",
                 "Adewale", "Oladipo", "Fashola", "Ajayi", "Odukoya", "Alabi", "Oyewole", "Adeleke"),
    },
    "igbo": {
        "M": ("Chukwuemeka", "Obinna", "Nnamdi", "Ikechukwu", "Chinedu", "Emeka", "Uchenna", "Kelechi", "Chidi",
              "Ifeanyi", "Onyeka", "Tochukwu", "Ugochukwu", "Chibuzo", "Somto"),
        "F": ("Ngozi", "Chiamaka", "Adaeze", "Nkechi", "Chioma", "Ifeoma", "Uchechi", "Amarachi", "Obioma",
              "Ebere", "Nneka", "Chinwe", "Ogechi", "Ijeoma", "Ada"),
        "last": ("Okafor", "Okonkwo", "Eze", "Nwosu", "Obi", "Chukwu", "Nwachukwu", "Okeke", "Onyekachi", "Ibe",
                 "Uzoma", "Anyanwu", "Nwankwo", "Ezeh", "Okoro", "Agu"),
    },
    "hausa": {
        "M": ("Abubakar", "Musa", "Ibrahim", "Aliyu", "Sani", "Usman", "Yusuf", "Bello", "Garba", "Abdullahi",
              "Suleiman", "Haruna", "Shehu", "Lawal", "Nasiru"),
        "F": ("Aisha", "Fatima", "Hauwa", "Zainab", "Amina", "Hadiza", "Maryam", "Halima", "Binta", "Rakiya",
              "Hafsat", "Jamila", "Safiya", "Asmau", "Bilkisu"),
        "last": ("Abdullahi", "Mohammed", "Bello", "Sani", "Usman", "Yakubu", "Garba", "Danjuma", "Shehu",
                 "Aminu", "Idris", "Lawal", "Musa", "Ibrahim", "Tanko", "Dikko"),
    },
}
_GROUPS = ("yoruba", "igbo", "hausa")
# Rough (Yoruba, Igbo, Hausa) mix of the people using a facility in each state.
_STATE_MIX = {
    "Lagos": (0.6, 0.3, 0.1), "Oyo": (0.85, 0.1, 0.05), "Osun": (0.9, 0.05, 0.05), "Kwara": (0.7, 0.05, 0.25),
    "Kano": (0.05, 0.1, 0.85), "Kaduna": (0.1, 0.15, 0.75), "Sokoto": (0.03, 0.05, 0.92),
    "Borno": (0.03, 0.07, 0.9), "FCT": (0.3, 0.3, 0.4), "Plateau": (0.15, 0.25, 0.6),
    "Enugu": (0.05, 0.9, 0.05), "Anambra": (0.05, 0.9, 0.05), "Rivers": (0.15, 0.75, 0.1),
    "Cross River": (0.2, 0.7, 0.1), "Edo": (0.3, 0.6, 0.1),
}
# Mobile number prefixes of the Nigerian networks (MTN, Glo, Airtel, 9mobile).
_PHONE_PREFIXES = ("803", "806", "813", "816", "703", "706", "810", "814", "903", "805", "807", "815",
                   "705", "905", "802", "808", "812", "701", "708", "902", "809", "817", "818", "909")


@dataclass(frozen=True)
class _Presentation:
    """Why someone comes to triage, and what follows from it in the record."""

    complaint: str
    conditions: tuple[str, ...]  # the first is the working diagnosis
    recommendations: tuple[str, ...]
    treatment: str
    medications: str
    lab: str
    imaging: str = ""
    weight: float = 1.0
    fever: bool = False
    spo2: bool = False
    levels: tuple[int, ...] = (3, 4)  # the triage levels this usually gets; the others stay possible
    sex: str | None = None
    ages: tuple[int, int] = (0, 120)


_PRESENTATIONS: tuple[_Presentation, ...] = (
    _Presentation(
        "Fever and chills", ("Malaria",),
        ("Artemether-lumefantrine for 3 days", "Return if fever persists", "Use insecticide-treated nets"),
        "Oral antimalarials", "Artemether-lumefantrine 80/480mg twice daily",
        "Malaria RDT positive, parasite density ++", weight=6, fever=True),
    _Presentation(
        "Headache and dizziness", ("Hypertension",),
        ("Start amlodipine 5mg", "Reduce salt intake", "Follow-up in 2 weeks"),
        "Antihypertensive therapy, lifestyle advice", "Amlodipine 5mg once daily",
        "Serum creatinine 92 umol/L, electrolytes normal", weight=4, ages=(30, 120)),
    _Presentation(
        "Frequent urination and thirst", ("Type 2 Diabetes",),
        ("Fasting blood glucose test", "Dietary counselling", "Follow-up in 4 weeks"),
        "Oral hypoglycaemics, diet plan", "Metformin 500mg twice daily",
        "Fasting blood glucose 9.8 mmol/L, HbA1c 8.1%", weight=2.5, ages=(25, 120)),
    _Presentation(
        "Cough for three weeks", ("Suspected Tuberculosis",),
        ("Sputum GeneXpert test", "Chest X-ray", "Refer to DOTS clinic"),
        "Investigation, cough hygiene advice", "",
        "GeneXpert MTB detected, rifampicin resistance not detected",
        "Chest X-ray: right upper lobe cavitation", weight=1.5, levels=(2, 3)),
    _Presentation(
        "Diarrhoea and vomiting", ("Acute Gastroenteritis", "Dehydration"),
        ("Oral rehydration salts", "Zinc supplementation", "Return if unable to drink"),
        "Rehydration", "ORS sachets;Zinc 20mg daily for 10 days",
        "Stool microscopy: no ova or parasites seen", weight=3, levels=(2, 3, 4)),
    _Presentation(
        "Chest pain", ("Hypertension", "Angina"),
        ("ECG", "Refer to cardiology", "Aspirin 75mg daily"),
        "Observation, ECG monitoring", "Aspirin 75mg daily;Amlodipine 10mg once daily",
        "Troponin I negative, lipid profile raised", "Chest X-ray: cardiomegaly, clear lung fields",
        weight=1.5, levels=(1, 2), ages=(35, 120)),
    _Presentation(
        "Abdominal pain and fever", ("Typhoid Fever",),
        ("Blood culture", "Ciprofloxacin for 7 days", "Drink boiled water"),
        "Oral antibiotics", "Ciprofloxacin 500mg twice daily",
        "Blood culture: Salmonella Typhi isolated", weight=2, fever=True),
    _Presentation(
        "Antenatal visit", ("Pregnancy", "Anaemia in Pregnancy"),
        ("Ferrous sulphate and folic acid", "Next ANC visit in 4 weeks", "Sleep under a treated net"),
        "Antenatal care", "Ferrous sulphate 200mg daily;Folic acid 5mg daily",
        "Haemoglobin 9.8 g/dL, urinalysis normal",
        "Obstetric ultrasound: single live intrauterine fetus, 24 weeks",
        weight=2.5, levels=(4, 5), sex="F", ages=(16, 45)),
    _Presentation(
        "Difficulty breathing", ("Asthma", "Pneumonia"),
        ("Salbutamol inhaler", "Chest X-ray", "Return immediately if worse"),
        "Nebulisation, antibiotics if bacterial",
        "Salbutamol inhaler 2 puffs as needed;Amoxicillin 500mg three times daily",
        "Full blood count: WBC 14.2 x10^9/L", "Chest X-ray: left lower lobe consolidation",
        weight=2, spo2=True, levels=(1, 2, 3)),
    _Presentation(
        "Joint and bone pain", ("Sickle Cell Crisis", "Osteoarthritis"),
        ("Analgesics", "Hydration", "Review in 1 week"),
        "Analgesia and hydration", "Paracetamol 1g three times daily;Folic acid 5mg daily",
        "Haemoglobin electrophoresis: HbSS", "X-ray knee: joint space narrowing", weight=1.5, levels=(2, 3)),
    _Presentation(
        "Skin rash and itching", ("Dermatitis", "Scabies"),
        ("Topical steroid cream", "Wash bedding in hot water"),
        "Topical therapy", "Hydrocortisone 1% cream;Permethrin 5% cream",
        "Skin scraping: mites seen", weight=1.5, levels=(4, 5)),
    _Presentation(
        "Road traffic injury", ("Laceration", "Suspected Fracture"),
        ("Wound dressing", "X-ray", "Tetanus toxoid"),
        "Wound care, immobilisation", "Tetanus toxoid 0.5ml IM;Ibuprofen 400mg three times daily",
        "Full blood count: haemoglobin 11.9 g/dL", "X-ray right forearm: undisplaced radial fracture",
        weight=1.2, levels=(1, 2, 3)),
    _Presentation(
        "Painful urination", ("Urinary Tract Infection",),
        ("Urinalysis", "Nitrofurantoin for 5 days", "Increase fluid intake"),
        "Oral antibiotics", "Nitrofurantoin 100mg twice daily",
        "Urinalysis: nitrites positive, leucocytes +++", weight=2, levels=(4, 5)),
    _Presentation(
        "Routine check-up", (),
        ("Continue current medication", "Follow-up in 3 months"),
        "Health education", "", "Random blood glucose 5.6 mmol/L", weight=2.5, levels=(4, 5)),
    _Presentation(
        "Convulsions with fever", ("Severe Malaria", "Febrile Seizure"),
        ("Admit for IV artesunate", "Monitor blood glucose"),
        "IV artesunate, anticonvulsant", "Artesunate 2.4mg/kg IV;Diazepam 0.5mg/kg rectal",
        "Malaria RDT positive, blood glucose 3.1 mmol/L", weight=0.8, fever=True, levels=(1, 2), ages=(0, 10)),
)
# Most walk-ins are semi-urgent or less; a presentation's usual levels get four times the weight.
_TRIAGE_WEIGHTS = {1: 4, 2: 11, 3: 37, 4: 34, 5: 14}
_RECORD_TYPES = (("Consultation", 35), ("Prescription", 25), ("Lab Result", 25), ("Imaging", 20))
_QUOTED_NOTE = ("Patient counselled on adherence, to return in 2 weeks.\n"
                "Bring previous lab results to the next visit.")


@dataclass
class _Patient:
    facility: _Facility
    first: str
    last: str
    sex: str
    dob: date
    phone: str
    chronic: tuple[str, ...]
    frequency: float  # how often this patient comes back, relative to the others at the facility
    visitable: bool = True  # False once the patient's row is spoiled on purpose (it will be a reject)


Visit = tuple[_Patient, _Presentation, int]


def generate_medilink_drops(*, end_date: date, days: int = 14, seed: int = 42, facilities: int = 12,
                            patients_per_facility: int = 25, visits_per_day: tuple[int, int] = (8, 30),
                            bad_rows: bool = True) -> DemoDrop:
    """Medilink drops for the `days` days ending on `end_date`, all derived from `seed`.

    The first day carries `facilities_YYYY-MM-DD.csv` and `patients_YYYY-MM-DD.csv`; every day carries
    `triage_visits_YYYY-MM-DD.csv` and `medical_records_YYYY-MM-DD.csv`. `visits_per_day` bounds the
    network-wide number of triage visits on a day (fewer only if every patient was already seen that day).
    With `bad_rows`, up to five rows break one contract rule each (fewer when the files are too small to
    keep two good rows per bad one); every one is listed in `DemoDrop.bad_rows`, every other row passes.
    """
    low, high = visits_per_day
    if days < 1:
        raise ValueError("days must be at least 1")
    if not 1 <= facilities <= MAX_FACILITIES:
        raise ValueError(f"facilities must be between 1 and {MAX_FACILITIES}")
    if patients_per_facility < 1:
        raise ValueError("patients_per_facility must be at least 1")
    if not 1 <= low <= high:
        raise ValueError("visits_per_day must be (low, high) with 1 <= low <= high")

    first_day = end_date - timedelta(days=days - 1)
    day_list = [first_day + timedelta(days=offset) for offset in range(days)]
    stream = _streams(seed)
    chosen = list(_FACILITIES[:facilities])
    patients = _make_patients(stream("patients"), chosen, patients_per_facility, first_day)

    files: dict[str, bytes] = {}
    bad: list[BadRow] = []

    facility_rows = _facility_rows(stream("facilities"), chosen)
    files[f"facilities_{first_day:%Y-%m-%d}.csv"] = _csv_bytes(FACILITY_COLUMNS, facility_rows, "cp1252", "\r\n")

    patients_key = f"patients_{first_day:%Y-%m-%d}.csv"
    patient_rows = _patient_rows(stream("patient-cells"), patients)
    if bad_rows:
        bad += _spoil_patients(stream("bad-patients"), patients_key, patient_rows, patients)
    files[patients_key] = _csv_bytes(PATIENT_COLUMNS, patient_rows, "utf-8-sig", "\r\n")

    shares = _facility_shares(stream("shares"), chosen)
    visits_rng, records_rng = stream("visits"), stream("records")
    triage_by_day: dict[date, list[list[str]]] = {}
    records_by_day: dict[date, list[list[str]]] = {}
    for index, day in enumerate(day_list):
        visits = _day_visits(visits_rng, day, patients, shares, low, high)
        triage_by_day[day] = [_triage_row(visits_rng, visit, day) for visit in visits]
        records_by_day[day] = _record_rows(records_rng, visits, with_quoted_note=index == 0)
    if bad_rows:
        bad += _spoil_triage(stream("bad-triage"), triage_by_day)

    for day in day_list:
        files[f"triage_visits_{day:%Y-%m-%d}.csv"] = _csv_bytes(TRIAGE_COLUMNS, triage_by_day[day], "utf-8", "\n")
        files[f"medical_records_{day:%Y-%m-%d}.csv"] = _csv_bytes(RECORD_COLUMNS, records_by_day[day], "utf-8", "\n")
    return DemoDrop(files=files, bad_rows=sorted(bad, key=lambda b: (b.key, b.row, b.column)))


def _streams(seed: int) -> Callable[[str], random.Random]:
    """An independent random stream per part, so that e.g. more days do not change the patients."""
    return lambda part: random.Random(f"medilink-demo:{seed}:{part}")


def _csv_bytes(header: Sequence[str], rows: list[list[str]], encoding: str, line_end: str) -> bytes:
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator=line_end)
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue().encode(encoding)  # 'utf-8-sig' writes the BOM


def _ragged(rng: random.Random, value: str, share: float) -> str:
    """Trailing spaces on some cells, as spreadsheet exports leave them."""
    return value + " " * rng.randint(1, 3) if value and rng.random() < share else value


def _age(dob: date, on: date) -> int:
    return on.year - dob.year - ((on.month, on.day) < (dob.month, dob.day))


# -- facilities and patients -----------------------------------------------------------------------


def _facility_rows(rng: random.Random, chosen: list[_Facility]) -> list[list[str]]:
    casings = (str.upper, str.title, str.lower)
    offset = rng.randrange(3)
    rows = []
    for index, facility in enumerate(chosen):
        state = casings[(index + offset) % 3](facility.state)
        rows.append([
            _ragged(rng, facility.name, 0.1), state, _ragged(rng, facility.lga, 0.2),
            f"{facility.lat:.4f}", f"{facility.lon:.4f}", facility.type,
        ])
    return rows


def _make_patients(rng: random.Random, chosen: list[_Facility], per_facility: int, first_day: date) -> list[_Patient]:
    oldest = date(1940, 1, 1)
    youngest = max(oldest, min(date(2024, 12, 31), first_day - timedelta(days=1)))
    span = (youngest - oldest).days
    patients: list[_Patient] = []
    for facility in chosen:
        mix = _STATE_MIX.get(facility.state, (1 / 3, 1 / 3, 1 / 3))
        # One patient per (first, last) at a facility, so that a visit naming them resolves to one patient.
        seen: set[tuple[str, str]] = set()
        for _ in range(per_facility):
            for _attempt in range(200):
                group = _NAMES[rng.choices(_GROUPS, weights=mix)[0]]
                sex = rng.choice("MF")
                first, last = rng.choice(group[sex]), rng.choice(group["last"])
                if (first, last) not in seen and first != last:
                    break
            else:
                raise ValueError(f"cannot find {per_facility} distinct patient names for {facility.name}")
            seen.add((first, last))
            # Skewed towards the young, as Nigeria's population (median age about 18) is.
            dob = oldest + timedelta(days=int(span * (1 - rng.random() ** 1.6)))
            age = _age(dob, first_day)
            chronic: list[str] = []
            if rng.random() < (0.35 if age >= 45 else 0.12 if age >= 30 else 0.01):
                chronic.append("Hypertension")
            if rng.random() < (0.15 if age >= 45 else 0.04 if age >= 30 else 0.0):
                chronic.append("Type 2 Diabetes")
            if rng.random() < 0.04:
                chronic.append("Asthma")
            if rng.random() < 0.02:
                chronic.append("Sickle Cell Disease")
            phone = "+234" + rng.choice(_PHONE_PREFIXES) + f"{rng.randrange(10**7):07d}"
            frequency = (2.5 if chronic else 1.0) * rng.uniform(0.5, 1.5)
            patients.append(_Patient(facility, first, last, sex, dob, phone, tuple(chronic), frequency))
    return patients


def _patient_rows(rng: random.Random, patients: list[_Patient]) -> list[list[str]]:
    rows = []
    for patient in patients:
        draw = rng.random()
        phone = "N/A" if draw < 0.05 else "" if draw < 0.08 else patient.phone
        rows.append([
            _ragged(rng, patient.facility.name, 0.02), patient.first, _ragged(rng, patient.last, 0.05),
            patient.sex, patient.dob.isoformat(), phone,
        ])
    return rows


def _spoil_patients(rng: random.Random, key: str, rows: list[list[str]], patients: list[_Patient]) -> list[BadRow]:
    """An impossible date of birth and an unknown sex. Those patients get no visits, as their rows are rejects."""
    spoils = (("dob", "31/02/1990", "type"), ("sex", "X", "allowed"))
    budget = len(rows) // 3  # at least two good rows per bad one
    candidates = list(range(len(rows)))
    rng.shuffle(candidates)
    bad: list[BadRow] = []
    for column, value, rule in spoils[:budget]:
        for index in candidates:
            patient = patients[index]
            if any(p.visitable and p is not patient for p in patients if p.facility == patient.facility):
                break  # the facility keeps someone to visit
        else:
            continue
        candidates.remove(index)
        patients[index].visitable = False
        rows[index][PATIENT_COLUMNS.index(column)] = value
        bad.append(BadRow(key, index + 1, column, rule))
    return bad


# -- visits and records ----------------------------------------------------------------------------


def _facility_shares(rng: random.Random, chosen: list[_Facility]) -> dict[str, float]:
    """Uneven shares of the network's visits: a teaching hospital draws many, a health centre a few.

    Each step down the ranking draws a quarter less; the floor keeps even the quietest facility open.
    """
    ranked = sorted(chosen, key=lambda f: _TYPE_RANK[f.type] + rng.uniform(0, 1.5), reverse=True)
    return {facility.name: 0.75**rank + 0.04 for rank, facility in enumerate(ranked)}


def _day_visits(rng: random.Random, day: date, patients: list[_Patient], shares: dict[str, float],
                low: int, high: int) -> list[Visit]:
    weekday = day.weekday()
    total = low + round((high - low) * _WEEKDAY_LOAD[weekday]) + rng.randint(-2, 2)
    total = max(low, min(high, total))
    # A patient is seen at most once a day at a facility (the natural key of the triage file).
    waiting: dict[str, list[_Patient]] = {}
    for patient in patients:
        if patient.visitable:
            waiting.setdefault(patient.facility.name, []).append(patient)
    weights = {}
    for name, group in waiting.items():
        factor = 1.0 if weekday < 5 else _WEEKEND_FACTOR[group[0].facility.type][weekday - 5]
        weights[name] = shares[name] * factor
    visits: list[Visit] = []
    for _ in range(total):
        open_names = [name for name in weights if waiting[name]]
        if not open_names:
            break
        name = rng.choices(open_names, weights=[weights[n] for n in open_names])[0]
        group = waiting[name]
        patient = rng.choices(group, weights=[p.frequency for p in group])[0]
        group.remove(patient)
        presentation = _presentation_for(rng, patient, day)
        visits.append((patient, presentation, _triage_level(rng, presentation)))
    return visits


def _presentation_for(rng: random.Random, patient: _Patient, day: date) -> _Presentation:
    age = _age(patient.dob, day)
    fitting = [p for p in _PRESENTATIONS
               if (p.sex is None or p.sex == patient.sex) and p.ages[0] <= age <= p.ages[1]]
    # Chronic patients come back for their condition more often than the rest of the population.
    weights = [p.weight * (3 if set(p.conditions) & set(patient.chronic) else 1) for p in fitting]
    return rng.choices(fitting, weights=weights)[0]


def _triage_level(rng: random.Random, presentation: _Presentation) -> int:
    levels = list(_TRIAGE_WEIGHTS)
    weights = [_TRIAGE_WEIGHTS[level] * (4 if level in presentation.levels else 1) for level in levels]
    return rng.choices(levels, weights=weights)[0]


def _vital_signs(rng: random.Random, patient: _Patient, presentation: _Presentation, day: date) -> str:
    draw = rng.random()
    if draw < 0.03:
        return "N/A"
    if draw < 0.05:
        return ""
    age = _age(patient.dob, day)
    parts = []
    # Blood pressure is rarely taken on young children, and sometimes skipped on a busy day.
    if age >= 12 and rng.random() < 0.88:
        systolic = 112 + max(age - 30, 0) * 0.5 + rng.gauss(0, 9)
        if "Hypertension" in patient.chronic or "Hypertension" in presentation.conditions:
            systolic += rng.uniform(20, 45)
        diastolic = systolic * 0.63 + rng.gauss(0, 5)
        parts.append(f"BP: {round(systolic)}/{round(diastolic)}")
    heart_rate = (110 if age < 5 else 78) + rng.gauss(0, 9) + (15 if presentation.fever else 0)
    parts.append(f"HR: {round(heart_rate)}")
    temperature = rng.uniform(38.0, 39.9) if presentation.fever else rng.uniform(36.3, 37.3)
    parts.append(f"Temp: {temperature:.1f}")
    if presentation.spo2:
        parts.append(f"SpO2: {rng.randint(86, 97)}%")
    return ", ".join(parts)


def _triage_row(rng: random.Random, visit: Visit, day: date) -> list[str]:
    patient, presentation, level = visit
    conditions = list(presentation.conditions[:1] if rng.random() < 0.6 else presentation.conditions)
    conditions += [c for c in patient.chronic if c not in conditions]
    recommendations = rng.sample(presentation.recommendations, k=rng.randint(1, len(presentation.recommendations)))
    return [
        _ragged(rng, patient.facility.name, 0.03), patient.first, patient.last, str(level),
        _ragged(rng, presentation.complaint, 0.08), _vital_signs(rng, patient, presentation, day),
        ";".join(conditions), "" if rng.random() < 0.05 else ";".join(recommendations),
    ]


def _record_rows(rng: random.Random, visits: list[Visit], *, with_quoted_note: bool) -> list[list[str]]:
    """A few records a day, each for a patient seen at triage that day."""
    count = min(len(visits), rng.randint(3, 8))
    rows = []
    for patient, presentation, level in rng.sample(visits, k=count):
        kinds = [(kind, weight) for kind, weight in _RECORD_TYPES if kind != "Imaging" or presentation.imaging]
        kind = rng.choices([k for k, _ in kinds], weights=[w for _, w in kinds])[0]
        conditions = presentation.conditions or patient.chronic
        diagnosis = conditions[0] if conditions else "General medical examination"
        medications = presentation.medications or "N/A"
        if kind == "Consultation":
            treatment = presentation.treatment
            notes = f"Presented with {presentation.complaint.lower()}, triage level {level}."
        elif kind == "Prescription":
            treatment = "Medication dispensed"
            notes = "Counselled on dosage, side effects and adherence."
        elif kind == "Lab Result":
            treatment, medications = "", ""
            notes = presentation.lab
        else:
            treatment, medications = "", "N/A"
            notes = presentation.imaging
        rows.append([
            patient.facility.name, patient.first, patient.last, kind, _ragged(rng, diagnosis, 0.05),
            treatment, medications, notes,
        ])
    if with_quoted_note and rows:
        rows[rng.randrange(len(rows))][RECORD_COLUMNS.index("notes")] = _QUOTED_NOTE
    return rows


def _spoil_triage(rng: random.Random, triage_by_day: dict[date, list[list[str]]]) -> list[BadRow]:
    """A triage level out of range, one that is not a number, and a visit without its facility.

    Spread over the first, middle and last day; a file only takes a bad row while it keeps at least two
    good rows per bad one.
    """
    spoils = (("triage_level", "7", "range"), ("triage_level", "high", "type"), ("facility_name", "", "required"))
    days = list(triage_by_day)
    taken: dict[date, list[int]] = {}
    bad: list[BadRow] = []
    for position, (column, value, rule) in enumerate(spoils):
        day = days[round(position * (len(days) - 1) / (len(spoils) - 1))]
        rows, used = triage_by_day[day], taken.setdefault(day, [])
        if 3 * (len(used) + 1) > len(rows):
            continue
        index = rng.choice([i for i in range(len(rows)) if i not in used])
        used.append(index)
        rows[index][TRIAGE_COLUMNS.index(column)] = value
        bad.append(BadRow(f"triage_visits_{day:%Y-%m-%d}.csv", index + 1, column, rule))
    return bad
