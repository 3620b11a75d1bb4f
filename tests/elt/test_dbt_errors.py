"""What a failed dbt run's DbtError says (elt.transform.failure_summary), on dbt's own output lines."""

from __future__ import annotations

from elt.transform import failure_summary

HEAD = ["Running with dbt=1.11.0", "Found 31 models, 212 data tests", "Concurrency: 4 threads (target='dev')"]


def _failing_tests(count: int) -> list[str]:
    return [f"{n} of {count} FAIL 3 not_null_triage_trends_col_{n:02d} .......... [FAIL 3 in 0.05s]"
            for n in range(1, count + 1)]


def test_a_run_with_few_failures_names_each_of_them_and_nothing_else():
    lines = [*HEAD, "1 of 3 PASS unique_dim_patients_patient_id ... [PASS in 0.04s]", *_failing_tests(2),
             "Done. PASS=1 WARN=0 ERROR=2 SKIP=0 NO-OP=0 TOTAL=3"]
    summary = failure_summary(lines).splitlines()
    assert summary == [*_failing_tests(2), "Done. PASS=1 WARN=0 ERROR=2 SKIP=0 NO-OP=0 TOTAL=3"]


def test_a_run_with_more_failures_than_kept_says_how_many_were_left_out():
    """30 failing tests and the summary line: 31 failure lines, 20 kept, so 11 left out, and the message says so
    (before, the first 11 vanished without a word, and a test looking for one of them failed for that reason)."""
    lines = [*HEAD, *_failing_tests(30), "Done. PASS=0 WARN=0 ERROR=30 SKIP=0 NO-OP=0 TOTAL=30"]
    summary = failure_summary(lines).splitlines()
    assert summary[0] == "(11 earlier failure lines left out: dbt's log has all)"
    assert summary[1:] == [*_failing_tests(30)[11:], "Done. PASS=0 WARN=0 ERROR=30 SKIP=0 NO-OP=0 TOTAL=30"]


def test_the_lines_after_a_database_error_say_what_postgres_refused():
    lines = [*HEAD, "Database Error in model fct_triage_visits (models/core/fct_triage_visits.sql)",
             '  new row for relation "fct_triage_visits" violates check constraint "triage_level_between_1_and_5"',
             "  compiled code at target/run/health/models/core/fct_triage_visits.sql", "Done."]
    assert failure_summary(lines).splitlines() == lines[3:6]
