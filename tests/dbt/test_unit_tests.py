"""dbt's unit tests run here, on their own; nightly builds skip them unless `dbt_unit_tests` is set."""

from __future__ import annotations

import json

from elt.transform import dbt_connection_env, run_dbt

# Declared under `unit_tests:` in dbt/models/*/_*.yml: the moving average, the age band, the priority mapping,
# blood-pressure parsing, the row filters, the 12-month window, the bed-occupancy changes and flags, the claims
# month spans, latest arrival and PMPM, the claims robust z-score, Benford MAD and readmission window and
# the per-month provider aggregates behind them, and the
# disclosure control of every de-identified mart, one or more per model.
UNIT_TESTS = {
    "bed_occupancy_trends_85_and_92_pct_flags", "bed_occupancy_trends_quarter_and_year_changes",
    "claims_pmpm_disclosure_control", "claims_pmpm_rates_and_months_without_members",
    "fct_claim_lines_latest_arrival_wins", "fct_member_months_spans",
    "condition_analysis_counts_and_shares", "condition_analysis_disclosure_control",
    "facility_monthly_disclosure_control", "facility_monthly_volumes_and_averages",
    "facility_performance_disclosure_control", "facility_performance_rounds_halves_up",
    "facility_stats_disclosure_control", "fct_triage_visits_keeps_only_rows_naming_one_patient",
    "fct_triage_visits_maps_triage_level_to_priority", "fct_triage_visits_parses_blood_pressure",
    "int_facility_activity_counts", "int_condition_visits_daily_age_band_on_the_visit_day",
    "int_provider_months_counts_sums_and_first_digits", "int_provider_procedure_months_claims_of_a_procedure",
    "int_condition_patients_first_sighting_per_age_band", "int_patient_windows_window_counts_and_sightings",
    "patient_summary_window_flags_and_last_reading",
    "provider_benford_mad_bands_and_minimum_claims", "provider_cost_outliers_robust_z_mad_zero_and_minimum_peers",
    "readmissions_30d_window_edges",
    "stg_medilink__patients_phone_and_age", "triage_trends_disclosure_control",
    "triage_trends_moving_average_and_week_over_week",
}


def test_builds_skip_unit_tests_unless_asked(settings):
    assert dbt_connection_env(settings)["DBT_EXCLUDE_RESOURCE_TYPES"] == "unit_test"
    assert "DBT_EXCLUDE_RESOURCE_TYPES" not in dbt_connection_env(settings.model_copy(update={"dbt_unit_tests": True}))


def test_every_unit_test_passes(settings, tmp_path):
    with_unit_tests = settings.model_copy(update={"dbt_unit_tests": True})
    # Unit tests read the columns of the models they feed from: built here on a warehouse with no drops.
    run_dbt(["run", "--target-path", str(tmp_path)], settings=with_unit_tests)
    run_dbt(["test", "--resource-type", "unit_test", "--target-path", str(tmp_path)], settings=with_unit_tests)

    results = json.loads((tmp_path / "run_results.json").read_text())["results"]
    passed = {r["unique_id"].rsplit(".", 1)[-1] for r in results if r["status"] == "pass"}
    assert passed == UNIT_TESTS


def test_a_build_leaves_unit_tests_out_by_default(settings, tmp_path):
    run_dbt(["build", "--select", "stg_medilink__patients", "--target-path", str(tmp_path)],
            settings=settings)
    kinds = {r["unique_id"].split(".")[0] for r in json.loads((tmp_path / "run_results.json").read_text())["results"]}
    assert "model" in kinds and "unit_test" not in kinds
