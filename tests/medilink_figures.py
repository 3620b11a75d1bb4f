"""What the Medilink marts should hold, worked out straight from the drops' CSV bytes with the csv module and the
domain rules (never from the warehouse), for the tests that compare marts and API answers with it: the true
counts first, then the figures the de-identified marts publish under disclosure control (tests/disclosure.py).
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal

from tests.disclosure import THRESHOLD, published, ratio

PRIORITY = {1: "critical", 2: "high", 3: "medium", 4: "low", 5: "low"}


def rows(files: dict[str, bytes], kind: str) -> list[tuple[date | None, dict]]:
    out = []
    for name, data in sorted(files.items()):
        if not name.startswith(kind):
            continue
        text = data.decode("cp1252") if kind == "facilities" else data.decode("utf-8-sig")
        day = date.fromisoformat(name.rsplit("_", 1)[1][:10])
        for row in csv.DictReader(io.StringIO(text, newline="")):
            out.append((day, {k: (v or "").strip() for k, v in row.items()}))
    return out


def null(value: str) -> str | None:
    return None if value.upper() in {"", "N/A", "NA", "-", "NULL"} else value


def _valid_date(value: str) -> bool:
    try:
        date.fromisoformat(value)
        return len(value) == 10
    except ValueError:
        return False


def round_half_up(value: Decimal, places: str) -> float:
    """Half away from zero, as Postgres's round(numeric, n) does (3.125 -> 3.13)."""
    return float(value.quantize(Decimal(places), rounding=ROUND_HALF_UP))


def state_name(value: str) -> str:
    words = " ".join("".join(ch if ch.isalpha() else " " for ch in value.lower()).split())
    if "fct" in words.split() or "federal capital territory" in words or words == "abuja":
        return "FCT"
    return " ".join(word.capitalize() for word in value.split())


def age_band(birth: date, on: date) -> str:
    age = on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))
    for upper, band in ((5, "0-4"), (15, "5-14"), (25, "15-24"), (45, "25-44"), (65, "45-64")):
        if age < upper:
            return band
    return "65+"


def facility_states(files: dict[str, bytes]) -> dict[str, str]:
    return {row["name"]: state_name(row["state"]) for _, row in rows(files, "facilities")}


def valid_patients(files: dict[str, bytes]) -> dict[tuple[str, str, str], list[dict]]:
    """Patient rows that pass their contract, by (facility, first name, last name) lower-cased."""
    patients = defaultdict(list)
    for _, row in rows(files, "patients"):
        sex, dob = null(row["sex"]), row["dob"]
        if not (null(row["facility_name"]) and null(row["first_name"]) and null(row["last_name"])):
            continue
        if (sex and sex.upper() not in {"M", "F"}) or not _valid_date(dob):
            continue
        patients[(row["facility_name"], row["first_name"].lower(), row["last_name"].lower())].append(row)
    return patients


def resolved_visits(files: dict[str, bytes]) -> list[dict]:
    """Triage visits that pass their contract and name exactly one patient, with that patient's row."""
    states = facility_states(files)
    patients = valid_patients(files)
    visits = []
    for day, row in rows(files, "triage_visits"):
        level = row["triage_level"]
        if not null(row["facility_name"]) or not level.isdigit() or not 1 <= int(level) <= 5:
            continue
        match = patients.get((row["facility_name"], row["patient_first_name"].lower(), row["patient_last_name"].lower()), [])
        if len(match) != 1:
            continue
        visits.append({"facility": row["facility_name"], "state": states[row["facility_name"]],
                       "day": day, "level": int(level), "patient": match[0],
                       "conditions": {c.strip().lower() for c in (null(row["conditions"]) or "").split(";") if c.strip()}})
    return visits


def resolved_record_days(files: dict[str, bytes]) -> list[tuple[str, date]]:
    """(facility, reporting day) of every medical record that passes its contract and names exactly one patient."""
    patients = valid_patients(files)
    out = []
    for day, row in rows(files, "medical_records"):
        key = (row["facility_name"], row["patient_first_name"].lower(), row["patient_last_name"].lower())
        if null(row["record_type"]) and len(patients.get(key, [])) == 1:
            out.append((row["facility_name"], day))
    return out


# --- true counts ------------------------------------------------------------------------------------------------
def facility_figures(files: dict[str, bytes]) -> dict[str, dict]:
    """Per facility name: patients, records, and its visits as (day, level)."""
    patients = valid_patients(files)
    figures = {name: {"patients": sum(len(v) for k, v in patients.items() if k[0] == name), "visits": [],
                      "records": 0} for name in facility_states(files)}
    for visit in resolved_visits(files):
        figures[visit["facility"]]["visits"].append((visit["day"], visit["level"]))
    for facility, _ in resolved_record_days(files):
        figures[facility]["records"] += 1
    return figures


def condition_groups(files: dict[str, bytes]) -> tuple[dict[tuple[str, str, str, str], dict], dict[str, int]]:
    """Per (state, age band, sex, condition): visits and the set of patients; and every state's visits."""
    state_visits: dict[str, int] = defaultdict(int)
    groups: dict[tuple[str, str, str, str], dict] = defaultdict(lambda: {"visits": 0, "patients": set()})
    for visit in resolved_visits(files):
        state_visits[visit["state"]] += 1
        patient = visit["patient"]
        sex = (null(patient["sex"]) or "Unknown").upper().replace("UNKNOWN", "Unknown")
        band = age_band(date.fromisoformat(patient["dob"]), visit["day"])
        for condition in visit["conditions"]:
            group = groups[(visit["state"], band, sex, condition)]
            group["visits"] += 1
            group["patients"].add((patient["facility_name"], patient["first_name"].lower(), patient["last_name"].lower()))
    return dict(groups), dict(state_visits)


# --- what the de-identified marts publish -----------------------------------------------------------------------
def published_facility_performance(files: dict[str, bytes]) -> dict[str, dict]:
    """analytics.facility_performance by facility name."""
    expected = {}
    for name, f in facility_figures(files).items():
        visits = f["visits"]
        days = {d for d, _ in visits}
        shown = published(len(visits)) is not None
        urgent = sum(1 for _, level in visits if level <= 2)
        visit_count = published(len(visits))
        expected[name] = {
            "patient_count": published(f["patients"]),
            "medical_record_count": published(f["records"]),
            "triage_visit_count": visit_count,
            "urgent_visit_count": published(urgent) if shown else None,
            "avg_triage_level": ratio(sum(level for _, level in visits), len(visits), "0.01") if shown else None,
            "active_days": len(days) if shown else None,
            "first_visit_date": min(days).isoformat() if days and shown else None,
            "last_visit_date": max(days).isoformat() if days and shown else None,
            "avg_daily_visits": ratio(visit_count, len(days), "0.01"),
            "volume_band": "High" if len(visits) >= 50 else "Medium" if len(visits) >= 10 else "Low",
            "is_patient_count_suppressed": published(f["patients"]) is None,
            "is_medical_record_count_suppressed": published(f["records"]) is None,
            "is_triage_visit_count_suppressed": not shown,
            "is_urgent_visit_count_suppressed": not shown or published(urgent) is None,
        }
    return expected


def published_facility_stats(files: dict[str, bytes]) -> dict[str, dict]:
    """analytics.facility_stats by state: the facilities' true counts added up, then controlled."""
    states = facility_states(files)
    totals: dict[str, dict] = defaultdict(lambda: defaultdict(int))
    for name, f in facility_figures(files).items():
        total = totals[states[name]]
        total["facility_count"] += 1
        total["patients"] += f["patients"]
        total["records"] += f["records"]
        total["visits"] += len(f["visits"])
        total["urgent"] += sum(1 for _, level in f["visits"] if level <= 2)
        total["levels"] += sum(level for _, level in f["visits"])
    expected = {}
    for state, t in totals.items():
        shown = published(t["visits"]) is not None
        expected[state] = {
            "facility_count": t["facility_count"],
            "patient_count": published(t["patients"]),
            "medical_record_count": published(t["records"]),
            "triage_visit_count": published(t["visits"]),
            "urgent_visit_count": published(t["urgent"]) if shown else None,
            "avg_triage_level": ratio(t["levels"], t["visits"], "0.01") if shown else None,
        }
    return expected


def published_condition_analysis(files: dict[str, bytes]) -> dict[tuple[str, str, str, str], dict]:
    """analytics.condition_analysis by (state, age band, sex, condition)."""
    groups, state_visits = condition_groups(files)
    expected = {}
    for key, g in groups.items():
        withheld = len(g["patients"]) < THRESHOLD
        visits = None if withheld else published(g["visits"])
        expected[key] = {
            "visit_count": visits,
            "patient_count": None if withheld else published(len(g["patients"])),
            "share_of_state_visits": ratio(visits, published(state_visits[key[0]]), "0.0001"),
            "is_suppressed": withheld,
        }
    return expected


def _daily_series(files: dict[str, bytes]) -> dict[str, list[tuple[date, dict[str, int]]]]:
    """Per facility, every day from its first to its last visit with its visits by priority (zeros between)."""
    by_day: dict[str, dict[date, dict[str, int]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(int)))
    for visit in resolved_visits(files):
        counts = by_day[visit["facility"]][visit["day"]]
        counts["visits"] += 1
        counts[PRIORITY[visit["level"]]] += 1
    series = {}
    for facility, days in by_day.items():
        first, last = min(days), max(days)
        spine = [first + timedelta(days=n) for n in range((last - first).days + 1)]
        series[facility] = [(day, days.get(day, {})) for day in spine]
    return series


def published_triage_trends(files: dict[str, bytes]) -> dict[tuple[str, str], dict]:
    """analytics.triage_trends by (facility name, day)."""
    expected = {}
    for facility, days in _daily_series(files).items():
        totals = [counts.get("visits", 0) for _, counts in days]
        for index, (day, counts) in enumerate(days):
            window = totals[max(0, index - 6): index + 1]
            previous = totals[index - 13: index - 6] if index >= 13 else None
            mix = {part: counts.get(part, 0) for part in ("critical", "high", "medium", "low")}
            mix_withheld = published(totals[index]) is None or any(published(n) is None for n in mix.values())
            shown_mix = {part: None if mix_withheld else published(n) for part, n in mix.items()}
            week = published(sum(window))
            week_before = published(sum(previous)) if previous is not None else None
            expected[(facility, day.isoformat())] = {
                "visit_count": published(totals[index]),
                **{f"{part}_count": n for part, n in shown_mix.items()},
                "urgent_share": None if mix_withheld else ratio(
                    shown_mix["critical"] + shown_mix["high"], sum(shown_mix.values()), "0.0001"),
                "visit_count_7d": week,
                "visit_count_7d_avg": ratio(week, len(window), "0.01"),
                "visit_count_prev_7d": week_before,
                "week_over_week_change": ratio(week - week_before, week_before, "0.0001")
                if week is not None and week_before is not None and len(window) == 7 else None,
            }
    return expected


def published_facility_monthly(files: dict[str, bytes]) -> dict[tuple[str, str], dict]:
    """analytics.facility_monthly by (facility name, first day of the month)."""
    months: dict[tuple[str, str], dict] = defaultdict(lambda: {"visits": [], "records": 0})
    for visit in resolved_visits(files):
        months[(visit["facility"], visit["day"].replace(day=1).isoformat())]["visits"].append(
            (visit["day"], visit["level"]))
    for facility, day in resolved_record_days(files):
        months[(facility, day.replace(day=1).isoformat())]["records"] += 1
    expected = {}
    for key, m in months.items():
        visits = published(len(m["visits"]))
        shown = visits is not None
        urgent = published(sum(1 for _, level in m["visits"] if level <= 2)) if shown else None
        days = len({d for d, _ in m["visits"]})
        expected[key] = {
            "triage_visit_count": visits,
            "urgent_visit_count": urgent,
            "visit_days": days if shown else None,
            "avg_daily_visits": ratio(visits, days, "0.01"),
            "urgent_share": ratio(urgent, visits, "0.0001"),
            "avg_triage_level": ratio(sum(level for _, level in m["visits"]), len(m["visits"]), "0.01")
            if shown else None,
            "medical_record_count": published(m["records"]),
        }
    return expected
