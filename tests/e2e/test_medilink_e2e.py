"""The whole slice: drops in S3 -> medilink_ingest, then medilink_marts, under dag.test() -> dbt marts -> the API.

The expected figures are computed here straight from the generated CSV bytes with the csv module and the
domain rules (not from the warehouse), then compared with what the API serves.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest

from elt.demo import generate_medilink_drops

PREFIX = "medical_records/input/"
DAGS = Path(__file__).resolve().parents[2] / "airflow" / "dags"
END = date(2026, 11, 14)


def _rows(files: dict[str, bytes], kind: str) -> list[tuple[date | None, dict]]:
    out = []
    for name, data in sorted(files.items()):
        if not name.startswith(kind):
            continue
        text = data.decode("cp1252") if kind == "facilities" else data.decode("utf-8-sig")
        day = date.fromisoformat(name.rsplit("_", 1)[1][:10])
        for row in csv.DictReader(io.StringIO(text, newline="")):
            out.append((day, {k: (v or "").strip() for k, v in row.items()}))
    return out


def _null(value: str) -> str | None:
    return None if value.upper() in {"", "N/A", "NA", "-", "NULL"} else value


def _valid_date(value: str) -> bool:
    try:
        date.fromisoformat(value)
        return len(value) == 10
    except ValueError:
        return False


def _round(value: Decimal, places: str) -> float:
    """Half away from zero, as Postgres's round(numeric, n) does (3.125 -> 3.13)."""
    return float(value.quantize(Decimal(places), rounding=ROUND_HALF_UP))


def _state(value: str) -> str:
    words = " ".join("".join(ch if ch.isalpha() else " " for ch in value.lower()).split())
    if "fct" in words.split() or "federal capital territory" in words or words == "abuja":
        return "FCT"
    return " ".join(word.capitalize() for word in value.split())


def _age_band(birth: date, on: date) -> str:
    age = on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))
    for upper, band in ((5, "0-4"), (15, "5-14"), (25, "15-24"), (45, "25-44"), (65, "45-64")):
        if age < upper:
            return band
    return "65+"


def valid_patients(files: dict[str, bytes]) -> dict[tuple[str, str, str], list[dict]]:
    """Patient rows that pass their contract, by (facility, first name, last name) lower-cased."""
    patients = defaultdict(list)
    for _, row in _rows(files, "patients"):
        sex, dob = _null(row["sex"]), row["dob"]
        if not (_null(row["facility_name"]) and _null(row["first_name"]) and _null(row["last_name"])):
            continue
        if (sex and sex.upper() not in {"M", "F"}) or not _valid_date(dob):
            continue
        patients[(row["facility_name"], row["first_name"].lower(), row["last_name"].lower())].append(row)
    return patients


def resolved_visits(files: dict[str, bytes]) -> list[dict]:
    """Triage visits that pass their contract and name exactly one patient, with that patient's row."""
    facilities = {row["name"]: row for _, row in _rows(files, "facilities")}
    patients = valid_patients(files)
    visits = []
    for day, row in _rows(files, "triage_visits"):
        level = row["triage_level"]
        if not _null(row["facility_name"]) or not level.isdigit() or not 1 <= int(level) <= 5:
            continue
        match = patients.get((row["facility_name"], row["patient_first_name"].lower(), row["patient_last_name"].lower()), [])
        if len(match) != 1:
            continue
        visits.append({"facility": row["facility_name"], "state": _state(facilities[row["facility_name"]]["state"]),
                       "day": day, "level": int(level), "patient": match[0],
                       "conditions": {c.strip().lower() for c in (_null(row["conditions"]) or "").split(";") if c.strip()}})
    return visits


def expected_triage_trends(files: dict[str, bytes]) -> dict[tuple[str, str], dict]:
    by_facility = defaultdict(lambda: defaultdict(int))
    for visit in resolved_visits(files):
        by_facility[visit["facility"]][visit["day"]] += 1
    expected = {}
    for facility, counts in by_facility.items():
        first, last = min(counts), max(counts)
        days = [first + timedelta(days=n) for n in range((last - first).days + 1)]
        series = [counts.get(day, 0) for day in days]
        for index, day in enumerate(days):
            window = series[max(0, index - 6): index + 1]
            previous = series[index - 13: index - 6] if index >= 13 else None
            change = None
            if previous is not None and len(window) == 7 and sum(previous):
                change = _round(Decimal(sum(window) - sum(previous)) / sum(previous), "0.0001")
            expected[(facility, day.isoformat())] = {
                "visit_count": series[index],
                "visit_count_7d_avg": _round(Decimal(sum(window)) / len(window), "0.01"),
                "week_over_week_change": change,
            }
    return expected


def expected_condition_analysis(files: dict[str, bytes]) -> dict[tuple[str, str, str, str], dict]:
    visits = resolved_visits(files)
    state_visits = defaultdict(int)
    groups = defaultdict(lambda: {"visits": 0, "patients": set()})
    for visit in visits:
        state_visits[visit["state"]] += 1
        patient = visit["patient"]
        sex = (_null(patient["sex"]) or "Unknown").upper().replace("UNKNOWN", "Unknown")
        band = _age_band(date.fromisoformat(patient["dob"]), visit["day"])
        for condition in visit["conditions"]:
            group = groups[(visit["state"], band, sex, condition)]
            group["visits"] += 1
            group["patients"].add((patient["facility_name"], patient["first_name"].lower(), patient["last_name"].lower()))
    return {
        key: {"visit_count": g["visits"], "patient_count": len(g["patients"]),
              "share_of_state_visits": _round(Decimal(g["visits"]) / state_visits[key[0]], "0.0001")}
        for key, g in groups.items()
    }


def expected_patient_visits(files: dict[str, bytes]) -> dict[tuple[str, str, str], tuple[int, list[str]]]:
    """Per resolved patient: visits (all within the 12-month window here) and their distinct conditions."""
    out: dict[tuple[str, str, str], tuple[int, set[str]]] = {}
    for visit in resolved_visits(files):
        patient = visit["patient"]
        key = (patient["facility_name"], patient["first_name"].lower(), patient["last_name"].lower())
        count, conditions = out.get(key, (0, set()))
        out[key] = (count + 1, conditions | visit["conditions"])
    return {key: (count, sorted(conditions)) for key, (count, conditions) in out.items()}


def expected_facility_figures(files: dict[str, bytes]) -> dict[str, dict]:
    facilities = {row["name"]: row for _, row in _rows(files, "facilities")}
    patients = valid_patients(files)
    figures = {name: {"patients": sum(len(v) for k, v in patients.items() if k[0] == name), "visits": [],
                      "records": 0} for name in facilities}
    for visit in resolved_visits(files):
        figures[visit["facility"]]["visits"].append((visit["day"], visit["level"]))
    for _, row in _rows(files, "medical_records"):
        key = (row["facility_name"], row["patient_first_name"].lower(), row["patient_last_name"].lower())
        if _null(row["record_type"]) and len(patients.get(key, [])) == 1:
            figures[row["facility_name"]]["records"] += 1
    expected = {}
    for name, f in figures.items():
        visits = f["visits"]
        days = {d for d, _ in visits}
        expected[name] = {
            "patient_count": f["patients"],
            "medical_record_count": f["records"],
            "triage_visit_count": len(visits),
            "urgent_visit_count": sum(1 for _, level in visits if level <= 2),
            # Reported averages round half away from zero (3.125 -> 3.13), as Postgres's round(numeric) does.
            "avg_triage_level": float((Decimal(sum(level for _, level in visits)) / len(visits)).quantize(
                Decimal("0.01"), rounding=ROUND_HALF_UP)) if visits else None,
            "active_days": len(days),
            "first_visit_date": min(days).isoformat() if days else None,
            "last_visit_date": max(days).isoformat() if days else None,
            "volume_band": "High" if len(visits) >= 50 else "Medium" if len(visits) >= 10 else "Low",
        }
    return expected


def _api_rows(settings) -> list[dict]:
    from backend.app import create_app
    from backend.auth import create_key
    from backend.config import ApiSettings

    client = create_app(ApiSettings(database_url=settings.database_url)).test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = "Bearer " + create_key(settings.database_url, "e2e", "analyst")
    rows, cursor = [], None
    while True:
        body = client.get("/api/v1/facilities", query_string={"limit": 5, **({"cursor": cursor} if cursor else {})}).get_json()
        rows += body["data"]
        cursor = body["meta"]["next_cursor"]
        if not cursor:
            return rows


@pytest.mark.e2e
def test_drops_in_s3_reach_the_marts_and_the_api_through_both_dags(settings, store, db, airflow_home, monkeypatch):
    drop = generate_medilink_drops(end_date=END, days=21, seed=7)  # three weeks: week-over-week has values
    for name, data in drop.files.items():
        store.put(PREFIX + name, data)
    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    monkeypatch.setenv("S3_ENDPOINT_URL", settings.s3_endpoint_url)
    monkeypatch.setenv("S3_BUCKET", settings.s3_bucket)
    from elt.config import get_settings

    get_settings.cache_clear()
    from airflow.dag_processing.dagbag import DagBag

    dags = DagBag(str(DAGS)).dags
    ingest, marts = dags["medilink_ingest"], dags["medilink_marts"]
    events_before = _asset_events()
    run = ingest.test()
    assert run.state == "success"
    assert _asset_events() == events_before + 1  # new raw data published: medilink_marts is scheduled on it
    assert _runs(db) == [("medilink_ingest", "success", len(drop.files), [])]
    assert marts.test().state == "success"

    # Every file loaded once; every deliberately bad row is in rejects and nothing else is.
    statuses = db.execute("select status, count(*) from ops.file_ledger group by 1").fetchall()
    assert statuses == [("loaded", len(drop.files))]
    assert db.execute("select count(distinct (file_id, row_number)) from ops.load_rejects").fetchone()[0] == len(drop.bad_rows)
    assert list(store.list(PREFIX)) == []

    expected = expected_facility_figures(drop.files)
    served = {row["facility_name"]: row for row in _api_rows(settings)}
    assert set(served) == set(expected)
    for name, figures in expected.items():
        got = {key: served[name][key] for key in figures}
        assert got == figures, name

    # The trend and condition marts agree with figures computed from the CSV bytes.
    trends = db.execute(
        "select facility_name, visit_date::text, visit_count, visit_count_7d_avg::float, "
        "week_over_week_change::float from analytics.triage_trends").fetchall()
    expected_trends = expected_triage_trends(drop.files)
    assert sum(1 for t in expected_trends.values() if t["week_over_week_change"] is not None) >= 5  # not vacuous
    assert {(f, d): {"visit_count": c, "visit_count_7d_avg": a, "week_over_week_change": w}
            for f, d, c, a, w in trends} == expected_trends
    conditions = db.execute(
        "select state, age_band, sex, condition_name, visit_count, patient_count, share_of_state_visits::float "
        "from analytics.condition_analysis").fetchall()
    assert len(conditions) >= 20
    assert {row[:4]: {"visit_count": row[4], "patient_count": row[5], "share_of_state_visits": row[6]}
            for row in conditions} == expected_condition_analysis(drop.files)

    # Monthly visits and visits per reporting day, per facility, from the CSV bytes.
    monthly = defaultdict(list)
    for visit in resolved_visits(drop.files):
        monthly[(visit["facility"], visit["day"].replace(day=1).isoformat())].append(visit["day"])
    expected_monthly = {key: (len(days), _round(Decimal(len(days)) / len(set(days)), "0.01")) for key, days in monthly.items()}
    assert len({month for _, month in expected_monthly}) == 2  # the drops span two months
    served_monthly = db.execute(
        "select facility_name, month_start::text, triage_visit_count, avg_daily_visits::float "
        "from analytics.facility_monthly where triage_visit_count > 0").fetchall()
    assert {(f, m): (c, a) for f, m, c, a in served_monthly} == expected_monthly

    # Each patient's 12-month summary counts the visits and conditions the CSV bytes give them.
    summaries = db.execute(
        "select facilities.facility_name, lower(summary.first_name), lower(summary.last_name), "
        "summary.triage_visit_count_12m, summary.conditions_12m from clinical.patient_summary as summary "
        "join core.dim_facilities as facilities using (facility_id)").fetchall()
    by_patient = {(f, first, last): (count, conditions) for f, first, last, count, conditions in summaries}
    expected_patients = expected_patient_visits(drop.files)
    assert len(expected_patients) >= 50
    assert {key: by_patient[key] for key in expected_patients} == expected_patients

    # A second run with no new files loads nothing, publishes nothing, and a rebuild changes no figure.
    assert ingest.test().state == "success"
    assert db.execute("select count(*) from ops.file_ledger").fetchone()[0] == len(drop.files)
    assert _asset_events() == events_before + 1
    assert marts.test().state == "success"
    assert {row["facility_name"]: row for row in _api_rows(settings)} == served

    # A facility in a state that does not exist passes the file contract (state is free text there) but
    # not the staging test: the marts run fails at that test, at once (no retry), and every published mart
    # keeps its rows.
    published = {table: _snapshot(db, table) for table in PUBLISHED}
    store.put(PREFIX + f"facilities_{END + timedelta(days=1)}.csv",
              b"name,state,lga,lat,lon,type\nAtlantis Royal Clinic,Atlantis,Poseidonia,6.5,3.4,Clinic\n")
    assert ingest.test().state == "success"
    assert _asset_events() == events_before + 2
    failed = marts.test()
    assert failed.state == "failed"
    states = {ti.task_id: (ti.state, ti.try_number) for ti in failed.get_task_instances()}
    assert states["dbt.stg_medilink__facilities.test"] == ("failed", 1)
    assert states["dbt.dim_facilities.run"][0] == "upstream_failed"
    assert {table: _snapshot(db, table) for table in PUBLISHED} == published
    run_state, failed_tasks, detail = db.execute(
        "select state, failed_tasks, detail from ops.pipeline_runs where dag_id = 'medilink_marts' "
        "and run_id = %s", (failed.run_id,)).fetchone()
    assert (run_state, failed_tasks) == ("failed", ["dbt.stg_medilink__facilities.test"])
    assert "accepted_values_stg_medilink__facilities_state" in detail
    get_settings.cache_clear()


# Every mart the API or BI tools read.
PUBLISHED = ("core.dim_facilities", "core.dim_patients", "core.fct_medical_records", "core.fct_triage_visits",
             "clinical.patient_summary", "analytics.facility_performance", "analytics.facility_monthly",
             "analytics.triage_trends", "analytics.condition_analysis")


def _snapshot(db, table: str) -> list[tuple]:
    return sorted(db.execute(f"select * from {table}").fetchall(), key=repr)  # noqa: S608 - a fixed list


def _asset_events() -> int:
    """Events of the medilink_raw asset in Airflow's metadata database: one per run that published new raw data."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import func, select

    with create_session() as session:
        return session.scalar(select(func.count()).select_from(AssetEvent).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
                              .where(AssetModel.uri == "warehouse://raw/medilink"))


def _runs(db) -> list[tuple]:
    return db.execute("select dag_id, state, files_loaded, failed_tasks from ops.pipeline_runs "
                      "order by started_at").fetchall()
