"""Disclosure control of the de-identified marts (dbt/macros/disclosure_control.sql) on real dbt and Postgres: the
rule reaches dbt from Settings, a setting that would leak is refused, marts built without it (what they were
before it) fail its data test, and marts built with it hold no count from 1 to the threshold - 1 and exactly the
figures worked out from the drops' CSV bytes by the documented rule (tests/medilink_figures.py)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from elt.config import Settings
from elt.demo import generate_medilink_drops
from elt.pipeline import discover_new_files, ingest_file
from elt.transform import DbtError, build, dbt_connection_env, run_dbt
from tests.disclosure import BASE, THRESHOLD
from tests.medilink_figures import (
    published_condition_analysis,
    published_facility_monthly,
    published_facility_performance,
    published_facility_stats,
    published_triage_trends,
)

PREFIX = "medical_records/input/"
PROJECT = Path(__file__).resolve().parents[2] / "dbt"
# Two busy clinics, so that some of every mart's figures are published (and others withheld).
BUSY = {"end_date": date(2026, 11, 14), "days": 14, "seed": 5, "facilities": 2, "patients_per_facility": 60,
        "visits_per_day": (60, 80)}
# The counts of people or of their visits and records in each mart: the columns with the data test.
CONTROLLED = {
    "facility_performance": ("patient_count", "medical_record_count", "triage_visit_count", "urgent_visit_count"),
    "facility_stats": ("patient_count", "medical_record_count", "triage_visit_count", "urgent_visit_count"),
    "facility_monthly": ("triage_visit_count", "urgent_visit_count", "medical_record_count"),
    "triage_trends": ("visit_count", "critical_count", "high_count", "medium_count", "low_count", "visit_count_7d",
                      "visit_count_prev_7d"),
    "condition_analysis": ("visit_count", "patient_count"),
}


def test_settings_and_the_dbt_project_default_to_the_same_rule():
    project = yaml.safe_load((PROJECT / "dbt_project.yml").read_text())["vars"]
    fields = Settings.model_fields
    assert (project["sdc_threshold"], project["sdc_rounding_base"]) == (
        fields["sdc_threshold"].default, fields["sdc_rounding_base"].default) == (THRESHOLD, BASE)


def test_dbt_is_given_the_rule_of_the_settings(settings):
    env = dbt_connection_env(settings.model_copy(update={"sdc_threshold": 20, "sdc_rounding_base": 10}))
    assert (env["DBT_SDC_THRESHOLD"], env["DBT_SDC_ROUNDING_BASE"]) == ("20", "10")


@pytest.mark.parametrize(("threshold", "base", "says"), [
    (12, 5, "a count of 12 is published as 10, below the threshold"),
    (2, 5, "a count of 2 is published as 0, below the threshold"),
    (6, 2, "a count of 6 is published as 6, which then stands for that count alone"),
])
def test_a_rule_under_which_a_published_figure_would_leak_is_refused(settings, tmp_path, threshold, base, says):
    bad = settings.model_copy(update={"sdc_threshold": threshold, "sdc_rounding_base": base})
    with pytest.raises(DbtError, match=says):
        run_dbt(["parse", "--target-path", str(tmp_path)], settings=bad)


def _load_busy_drops(settings, store) -> dict[str, bytes]:
    files = generate_medilink_drops(**BUSY).files
    for name, data in files.items():
        store.put(PREFIX + name, data)
    assert {ingest_file(key, settings=settings).status for key in discover_new_files(settings=settings)} == {"loaded"}
    return files


def _mart(db, table: str, key: tuple[str, ...], columns) -> dict:
    """analytics.<table> as {key: {column: value}}, dates as text and numerics as floats."""
    listed = ", ".join([*key, *columns])
    by_key = {}
    for row in db.execute(f"select {listed} from analytics.{table}").fetchall():  # noqa: S608 - fixed names
        values = [v.isoformat() if isinstance(v, date) else float(v) if isinstance(v, Decimal) else v for v in row]
        by_key[tuple(values[:len(key)]) if len(key) > 1 else values[0]] = dict(zip(columns, values[len(key):],
                                                                                    strict=True))
    return by_key


def _small_or_unrounded(db) -> dict[str, int]:
    """Per mart, the rows that publish a controlled count from 1 to the threshold - 1, or one not rounded."""
    found = {}
    for table, columns in CONTROLLED.items():
        bad = " or ".join(f"({c} <> 0 and ({c} < {THRESHOLD} or {c} % {BASE} <> 0))" for c in columns)
        found[table] = db.execute(f"select count(*) from analytics.{table} where {bad}").fetchone()[0]  # noqa: S608
    return found


def test_marts_without_disclosure_control_fail_its_data_test_and_controlled_marts_publish_the_rule(
        settings, store, db):
    files = _load_busy_drops(settings, store)

    # Built as they were before disclosure control (threshold 1, base 1: every count as it is), the marts show
    # a condition seen in one patient of a state, age band and sex, and the data test refuses them.
    build(settings=settings.model_copy(update={"sdc_threshold": 1, "sdc_rounding_base": 1}))
    assert db.execute("select count(*) from analytics.condition_analysis where patient_count = 1").fetchone()[0] > 0
    assert all(_small_or_unrounded(db).values())
    # Two marts' tests (nine of them): DbtError keeps the last 20 failure lines, and the tests of all five marts
    # fail 20 lines and a summary, so which one dropped out would depend on the order dbt runs them in.
    refusing = "test_name:disclosure_controlled,condition_analysis test_name:disclosure_controlled,triage_trends"
    with pytest.raises(DbtError, match="disclosure_controlled_condition_analysis_patient_count") as refused:
        run_dbt(["test", "--select", refusing], settings=settings)
    assert "disclosure_controlled_triage_trends_visit_count" in str(refused.value)

    # With the rule (the settings' defaults) the build passes its data tests, nothing small or unrounded is left,
    # and every mart holds what the rule makes of the figures the CSV bytes give.
    build(settings=settings)
    assert _small_or_unrounded(db) == dict.fromkeys(CONTROLLED, 0)
    expected = published_facility_performance(files)
    assert _mart(db, "facility_performance", ("facility_name",), next(iter(expected.values()))) == expected
    expected = published_facility_stats(files)
    assert _mart(db, "facility_stats", ("state",), next(iter(expected.values()))) == expected
    expected = published_facility_monthly(files)
    assert _mart(db, "facility_monthly", ("facility_name", "month_start"), next(iter(expected.values()))) == expected
    expected = published_triage_trends(files)
    assert _mart(db, "triage_trends", ("facility_name", "visit_date"), next(iter(expected.values()))) == expected
    assert {row["visit_count"] is None for row in expected.values()} == {True, False}
    expected = published_condition_analysis(files)
    assert _mart(db, "condition_analysis", ("state", "age_band", "sex", "condition_name"),
                 next(iter(expected.values()))) == expected
    assert {row["is_suppressed"] for row in expected.values()} == {True, False}
