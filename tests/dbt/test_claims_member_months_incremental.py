"""Member months, members and PMPM follow what changed (decision 0028, amendment of 2026-12-06 evening).

A payer's monthly member file re-sends every enrolled member. A member sent again with the same spans keeps the
rows it had (and their built_at); a member still enrolled (an open span, which ends with the month of the latest
file that sent it) gains the new month and nothing else; a member whose spans changed, ended, or who is gone with
a file set aside is written again. Each nightly result equals a --full-refresh in every column of every row. The
expected member months are written out here by hand from the files below.

Small BlueCross member and claims files go through the real loader from the S3 endpoint; `dbt build` of the claims
selection runs on the real warehouse. Disclosure control is off (threshold 1, base 1) so that claims_pmpm compares
exactly.
"""

from __future__ import annotations

from datetime import date

import pytest
from psycopg import sql

from elt.config import Settings
from elt.families import declared_families
from elt.pipeline import ingest_file
from elt.transform import run_dbt
from tests.conftest import table_contents
from tests.dbt.claims_files import bluecross_claims as claims
from tests.dbt.claims_files import bluecross_members as members

SELECTION = declared_families(Settings())["claims"].dbt_select()
COMPARED = ("core.int_current_eligibility", "core.fct_member_months", "core.dim_members", "core.fct_claims",
            "analytics.claims_pmpm")


def month_key(month: str, name: str, drop: str = "eligibility") -> str:
    year, number = month.split("-")
    return f"{drop}/provider=bluecross/year={year}/month={number}/{name}"


def months(first: str, last: str, plan: str) -> list[tuple[str, str]]:
    """(month, plan) for every month from `first` to `last` (YYYY-MM), written out by counting."""
    year, month = map(int, first.split("-"))
    out = []
    while f"{year:04d}-{month:02d}" <= last:
        out.append((f"{year:04d}-{month:02d}-01", plan))
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return out


# January's member file. A: ended in 2023. B: enrolled since October (no end). C, D: enrolled, no end. E: enrolled
# since June, not in February's file. G: a gold span to June 2024 (sent with its end) and a silver one from January
# with no end: the later start wins the months both cover. I: enrolled from February, sent ahead in January.
JANUARY = members(
    "A,BlueCross,ppo,2023-03-01,2023-08-31,1970-01-01,F",
    "B,BlueCross,hmo,2023-10-01,,1971-02-02,M",
    "C,BlueCross,ppo,2023-11-01,,1972-03-03,F",
    "D,BlueCross,ppo,2023-12-01,,1973-04-04,M",
    "E,BlueCross,hmo,2023-06-01,,1974-05-05,F",
    "G,BlueCross,gold,2023-01-01,2024-06-30,1975-06-06,M",
    "G,BlueCross,silver,2024-01-01,,1975-06-06,M",
    "I,BlueCross,hmo,2024-02-01,,1976-07-07,F",
)
# A second January file with one member, F, set aside on the night.
JANUARY_EXTRA = members("F,BlueCross,ppo,2023-09-01,,1977-08-08,M")
# February's: A, B, G and I the same; C's span ended mid-January; D moved to hmo in February; H is new.
FEBRUARY = members(
    "A,BlueCross,ppo,2023-03-01,2023-08-31,1970-01-01,F",
    "B,BlueCross,hmo,2023-10-01,,1971-02-02,M",
    "C,BlueCross,ppo,2023-11-01,2024-01-15,1972-03-03,F",
    "D,BlueCross,ppo,2023-12-01,2024-01-31,1973-04-04,M",
    "D,BlueCross,hmo,2024-02-01,,1973-04-04,M",
    "G,BlueCross,gold,2023-01-01,2024-06-30,1975-06-06,M",
    "G,BlueCross,silver,2024-01-01,,1975-06-06,M",
    "H,BlueCross,hmo,2024-02-01,,1978-09-09,F",
    "I,BlueCross,hmo,2024-02-01,,1976-07-07,F",
)
# Z has claims and no eligibility.
JANUARY_CLAIMS = claims(("K1", "B", "2024-01-10", 80), ("K2", "D", "2024-01-11", 50), ("K3", "Z", "2024-01-12", 30))
FEBRUARY_CLAIMS = claims(("K4", "D", "2024-02-05", 20), ("K5", "H", "2024-02-06", 40))

BASE = {
    month_key("2024-01", "members.csv"): JANUARY,
    month_key("2024-01", "extra_members.csv"): JANUARY_EXTRA,
    month_key("2024-01", "batch.csv", "claims"): JANUARY_CLAIMS,
}
NIGHT = {
    month_key("2024-02", "members.csv"): FEBRUARY,
    month_key("2024-02", "batch.csv", "claims"): FEBRUARY_CLAIMS,
}

# By hand, after February's night. An open span runs to the end of the month of the latest file that sent it.
EXPECTED_AFTER_FEBRUARY = {
    "A": months("2023-03", "2023-08", "ppo"),
    "B": months("2023-10", "2024-02", "hmo"),  # one month more
    "C": months("2023-11", "2024-01", "ppo"),  # ended in January
    "D": months("2023-12", "2024-01", "ppo") + months("2024-02", "2024-02", "hmo"),
    "E": months("2023-06", "2024-01", "hmo"),  # not in February's file: January's spans, to January
    # F: its file set aside
    # G: gold alone to December, silver (started later) wherever its open span reaches, gold again to June
    "G": months("2023-01", "2023-12", "gold") + months("2024-01", "2024-02", "silver")
         + months("2024-03", "2024-06", "gold"),
    "H": months("2024-02", "2024-02", "hmo"),
    "I": months("2024-02", "2024-02", "hmo"),  # January's file covered none of it
}


def load(settings, store, files: dict[str, bytes]) -> None:
    for key, data in files.items():
        store.put(key, data)
        assert ingest_file(key, settings=settings).status == "loaded", key


def build(settings, tmp_path, name: str, *extra: str) -> None:
    run_dbt(["build", "--select", *SELECTION, *extra, "--target-path", str(tmp_path / name)], settings=settings)


def member_months(db) -> dict[str, list[tuple[str, str]]]:
    found: dict[str, list[tuple[str, str]]] = {}
    for member_id, month, plan in db.execute(
            "select member_id, month::text, plan from core.fct_member_months order by 1, 2").fetchall():
        found.setdefault(member_id, []).append((month, plan))
    return found


def row_versions(db, table: str) -> list[tuple]:
    """Each row's key with its physical version (xmin) and built_at: equal when nothing wrote the row."""
    key = ["member_id", "month"] if table == "core.fct_member_months" else ["member_id"]
    listed = sql.SQL(", ").join(sql.Identifier(column) for column in key)
    return db.execute(sql.SQL("select {}, xmin::text, built_at from {} order by {}").format(
        listed, sql.Identifier(*table.split(".")), listed)).fetchall()


def spans_built_at(db) -> dict[str, object]:
    return dict(db.execute("select member_id, max(built_at) from core.int_current_eligibility group by 1").fetchall())


@pytest.fixture
def claims_settings(settings):
    return settings.model_copy(update={"sdc_threshold": 1, "sdc_rounding_base": 1})


def test_a_re_sent_member_file_rewrites_only_the_members_whose_months_changed(claims_settings, store, db, tmp_path):
    settings = claims_settings
    load(settings, store, BASE)
    build(settings, tmp_path, "base")
    months_before = row_versions(db, "core.fct_member_months")
    members_before = row_versions(db, "core.dim_members")
    spans_before = spans_built_at(db)

    load(settings, store, NIGHT)
    db.execute("update ops.file_ledger set status = 'quarantined' where key = %s",
               (month_key("2024-01", "extra_members.csv"),))
    build(settings, tmp_path, "night")
    nightly = table_contents(db, COMPARED)

    assert member_months(db) == EXPECTED_AFTER_FEBRUARY
    # A (the same closed span) and E (not sent) keep every row as the first build wrote it; B keeps its months to
    # January and gains February; the others are written again.
    months_after = row_versions(db, "core.fct_member_months")
    kept = [row for row in months_before if row[0] in {"A", "E"} or (row[0] == "B" and row[1] < date(2024, 2, 1))]
    assert [row for row in months_after if row in months_before] == kept
    assert [(m, str(month)) for m, month, *_ in months_after if (m, month, *_) not in months_before] == [
        ("B", "2024-02-01"), *[("C", month) for month, _ in EXPECTED_AFTER_FEBRUARY["C"]],
        *[("D", month) for month, _ in EXPECTED_AFTER_FEBRUARY["D"]],
        *[("G", month) for month, _ in EXPECTED_AFTER_FEBRUARY["G"]], ("H", "2024-02-01"), ("I", "2024-02-01")]
    # The spans of A, B and I did not change: int_current_eligibility keeps their built_at (it records February's
    # file as their latest arrival); C, D and G changed; F is gone; H is new.
    spans_after = spans_built_at(db)
    assert {m: spans_after[m] == spans_before[m] for m in spans_before if m in spans_after} == {
        "A": True, "B": True, "C": False, "D": False, "E": True, "G": False, "I": True}
    assert sorted(spans_after) == ["A", "B", "C", "D", "E", "G", "H", "I"]
    # dim_members: A and E (and Z, claims only) untouched; B's last day enrolled moved on to February's.
    untouched = {row[0] for row in row_versions(db, "core.dim_members") if row in members_before}
    assert untouched == {"A", "E", "Z"}
    assert db.execute("select member_id, plan, first_enrolled_on::text, last_enrolled_on::text from core.dim_members "
                      "where member_id in ('B', 'F', 'I', 'Z') order by 1").fetchall() == [
        ("B", "hmo", "2023-10-01", "2024-02-29"), ("I", "hmo", "2024-02-01", "2024-02-29"), ("Z", None, None, None)]

    build(settings, tmp_path, "full", "--full-refresh")
    full = table_contents(db, COMPARED)
    for table in COMPARED:
        assert nightly[table] == full[table], table
    assert all(full[table] for table in COMPARED)


def test_months_stay_exact_when_a_build_of_the_members_was_missed_and_a_quiet_night_writes_nothing(
        claims_settings, store, db, tmp_path):
    """March's file is taken in by a build of int_current_eligibility alone (the member months not built after it);
    April's by the whole selection: B's open span grows by two months at once, D's plan change of March is
    written whole. A corrected February file loaded after them takes B back to February. A build with no new file
    then writes no row."""
    settings = claims_settings
    load(settings, store, {month_key("2024-01", "members.csv"): JANUARY})
    build(settings, tmp_path, "base")
    load(settings, store, {month_key("2024-03", "members.csv"): members(
        "B,BlueCross,hmo,2023-10-01,,1971-02-02,M",
        "D,BlueCross,ppo,2023-12-01,2024-02-29,1973-04-04,M", "D,BlueCross,hmo,2024-03-01,,1973-04-04,M")})
    run_dbt(["build", "--select", "stg_claims__eligibility", "int_current_eligibility",
             "--target-path", str(tmp_path / "march")], settings=settings)
    load(settings, store, {month_key("2024-04", "members.csv"): members(  # March's and H, new
        "B,BlueCross,hmo,2023-10-01,,1971-02-02,M",
        "D,BlueCross,ppo,2023-12-01,2024-02-29,1973-04-04,M", "D,BlueCross,hmo,2024-03-01,,1973-04-04,M",
        "H,BlueCross,hmo,2024-04-01,,1978-09-09,F")})
    build(settings, tmp_path, "april")

    found = member_months(db)
    assert found["B"] == months("2023-10", "2024-04", "hmo")
    assert found["D"] == months("2023-12", "2024-02", "ppo") + months("2024-03", "2024-04", "hmo")
    assert found["C"] == months("2023-11", "2024-01", "ppo")  # January's file is still C's latest
    assert found["H"] == months("2024-04", "2024-04", "hmo")
    # A corrected February file loads after April's and sends B again: its latest arrival is now February's, and
    # its open span ends there again (the months it held to April are not all kept).
    load(settings, store, {month_key("2024-02", "members_corrected.csv"): members(
        "B,BlueCross,hmo,2023-10-01,,1971-02-02,M")})
    build(settings, tmp_path, "corrected")
    assert member_months(db)["B"] == months("2023-10", "2024-02", "hmo")
    nightly = table_contents(db, COMPARED)

    versions = {table: row_versions(db, table) for table in ("core.fct_member_months", "core.dim_members")}
    build(settings, tmp_path, "quiet")
    assert {table: row_versions(db, table) for table in versions} == versions

    build(settings, tmp_path, "full", "--full-refresh")
    full = table_contents(db, COMPARED)
    for table in COMPARED:
        assert nightly[table] == full[table], table
