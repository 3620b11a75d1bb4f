"""KH03 workbooks through the real pipeline (Postgres, S3 endpoint): three raw tables from one workbook, the
period from the workbook, quarantine with the reader's reason, a revised quarter superseding the earlier one.

Expected figures come from the fixture spec (tests/elt/kh03_fixtures.py) or from the real workbooks read
here with openpyxl, never from the loader.
"""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal

import openpyxl
import pytest
from psycopg import sql

from elt.pipeline import discover_new_files, ingest_file
from tests.conftest import shared_data
from tests.elt.journey import put_later
from tests.elt.kh03_fixtures import (
    DEFAULT_TRUSTS,
    REGION_NAMES,
    SPECIALTIES,
    Kh03Spec,
    Trust,
    as_xls,
    build_kh03,
    dec,
    openpyxl_row,
)

PREFIX = "nhs/kh03/"
SECTORS = ("Total", "General & Acute", "Learning Disabilities", "Maternity", "Mental Illness")
Q2_FILE = "Beds-Open-Overnight-Web_File-Final-DE5WC.xlsx"
Q1_FILE = "2021-Q1-Beds-Open-Overnight-Web_File-Final-DE5WC.xlsx"
Q3_2025_FILE = "Beds-Open-Overnight-Web_File-Q3-2025-26_duplicate.xlsx"


def ingest_all(settings) -> dict:
    return {key: ingest_file(key, settings=settings) for key in discover_new_files("nhs", settings=settings)}


def test_one_workbook_fills_three_raw_tables_with_the_workbooks_own_period(settings, store, db):
    store.put(PREFIX + "Beds-Open-Overnight-Web_File-Final.xlsx", build_kh03())

    outcome = ingest_all(settings)[PREFIX + "Beds-Open-Overnight-Web_File-Final.xlsx"]

    trusts, regions = len(DEFAULT_TRUSTS), len({t.region for t in DEFAULT_TRUSTS})
    # trust sheet: England + each trust, five sectors each; region sheet: each region; specialty: trust x specialty
    expected_rows = (1 + trusts) * 5 + regions * 5 + trusts * len(SPECIALTIES)
    assert (outcome.status, outcome.rows_read, outcome.rows_rejected) == ("loaded", expected_rows, 0)
    assert outcome.moved_to.startswith(PREFIX + "archive/")
    ledger = db.execute("select status, period_start, period_end, layout from ops.file_ledger").fetchone()
    assert ledger == ("loaded", date(2020, 7, 1), date(2020, 9, 30), "default")

    barts = DEFAULT_TRUSTS[0]
    row = db.execute(
        "select financial_year, quarter, org_name, region_code, available, occupied, pct_occupied, is_england "
        "from raw.nhs_kh03_trust_sector__valid where org_code = 'R1H' and sector = 'General & Acute'").fetchone()
    assert row[:4] == ("2020-21", 2, barts.name, "Y56")
    assert (row[4], row[5]) == (dec(barts.available[0]), dec(barts.occupied[0]))  # decimals kept, not rounded
    assert abs(row[6] - Decimal(barts.occupied[0] / barts.available[0])) < Decimal("1e-12")
    assert row[7] is False
    england = db.execute(
        "select available, occupied, org_code, region_code from raw.nhs_kh03_trust_sector__valid "
        "where is_england and sector = 'General & Acute'").fetchone()
    assert england[0] == dec(sum(t.available[0] for t in DEFAULT_TRUSTS))
    assert england[1] == dec(sum(t.occupied[0] for t in DEFAULT_TRUSTS))
    assert england[2:] == (None, None)
    # "-" where a trust has no beds of a sector: no rate, not zero
    assert db.execute("select pct_occupied from raw.nhs_kh03_trust_sector__valid "
                      "where org_code = 'R1H' and sector = 'Learning Disabilities'").fetchone() == (None,)

    london = db.execute("select region_name, available from raw.nhs_kh03_region_sector__valid "
                        "where region_code = 'Y56' and sector = 'Total'").fetchone()
    assert london[0] == REGION_NAMES["Y56"]
    assert london[1] == dec(sum(t.total("available") for t in DEFAULT_TRUSTS if t.region == "Y56"))
    assert db.execute("select count(*) from raw.nhs_kh03_region_sector__valid where is_england").fetchone() == (0,)

    specialty = db.execute("select specialty_name, occupied from raw.nhs_kh03_specialty__valid "
                           "where org_code = 'RAL' and specialty_code = '101'").fetchone()
    assert specialty == (SPECIALTIES[1][1], dec(DEFAULT_TRUSTS[1].specialty(1)))


def test_a_workbook_without_a_readable_period_is_quarantined_and_loads_nothing(settings, store, db):
    store.put(PREFIX + "beds.xlsx", build_kh03(Kh03Spec(period_text=None, year=None, period_end=None)))
    store.put(PREFIX + "good.xlsx", build_kh03())

    outcomes = ingest_all(settings)

    bad = outcomes[PREFIX + "beds.xlsx"]
    assert bad.status == "quarantined" and bad.error.startswith("missing_period:")
    assert outcomes[PREFIX + "good.xlsx"].status == "loaded"  # the other file still loads
    assert bad.moved_to.startswith(PREFIX + "quarantine/")
    sidecar = json.loads(store.read(bad.moved_to + ".error.json"))
    assert sidecar["rule"] == "missing_period" and "Period" in sidecar["reason"]
    for table in ("raw.nhs_kh03_trust_sector", "raw.nhs_kh03_region_sector", "raw.nhs_kh03_specialty"):
        assert db.execute(sql.SQL("select count(*) from {} where _file_id = %s").format(sql.SQL(table)),
                          (bad.file_id,)).fetchone() == (0,)


def test_a_workbook_breaking_a_total_is_rejected_whole_with_the_reason(settings, store, db):
    spec = Kh03Spec(total_overrides={("RAL", "available"): 1.0})
    store.put(PREFIX + "beds.xlsx", build_kh03(spec))

    outcome = ingest_all(settings)[PREFIX + "beds.xlsx"]

    assert outcome.status == "quarantined" and outcome.error.startswith("total_mismatch:")
    assert "NHS Trust by Sector" in outcome.error
    assert db.execute("select count(*) from raw.nhs_kh03_trust_sector").fetchone() == (0,)


def test_a_revised_quarter_supersedes_the_earlier_workbook_and_keeps_its_rows(settings, store, db):
    store.put(PREFIX + "Beds-Open-Overnight-Web_File-Q2-2020-21.xlsx", build_kh03())
    first = ingest_all(settings)[PREFIX + "Beds-Open-Overnight-Web_File-Q2-2020-21.xlsx"]
    revised_barts = Trust("R1H", "BARTS HEALTH NHS TRUST", "Y56", (1500.5, 0.0, 180.25, 0.0), (1400.75, 0.0, 100.5, 0.0))
    spec = Kh03Spec(appended=(revised_barts,))  # a re-submitted trust appended after the sorted rows
    # It arrives later (and says no later publication date): the later arrival is current, whatever the names.
    put_later(store, PREFIX + "Beds-Open-Overnight-Web_File-Q2-2020-21-revised.xlsx", build_kh03(spec),
              after=first.moved_to)
    # another quarter is not touched by the revision
    store.put(PREFIX + "Beds-Open-Overnight-Web_File-Q1-2020-21.xlsx",
              build_kh03(Kh03Spec(period_text="April to June 2020", period_end="June")))

    outcomes = ingest_all(settings)
    second = outcomes[PREFIX + "Beds-Open-Overnight-Web_File-Q2-2020-21-revised.xlsx"]

    assert second.status == "loaded"
    statuses = dict(db.execute("select file_id, status from ops.file_ledger").fetchall())
    assert statuses[first.file_id] == "superseded" and statuses[second.file_id] == "loaded"
    assert statuses[outcomes[PREFIX + "Beds-Open-Overnight-Web_File-Q1-2020-21.xlsx"].file_id] == "loaded"
    assert db.execute("select superseded_by from ops.file_ledger where file_id = %s",
                      (first.file_id,)).fetchone() == (second.file_id,)
    # history kept: both versions of Barts stay in raw; the current one is the re-submitted row
    rows = dict(db.execute(
        "select _file_id, occupied from raw.nhs_kh03_trust_sector__valid where org_code = 'R1H' "
        "and sector = 'General & Acute' and quarter = 2").fetchall())
    assert rows == {first.file_id: dec(DEFAULT_TRUSTS[0].occupied[0]), second.file_id: dec(1400.75)}


def test_the_same_workbook_under_another_name_is_a_duplicate(settings, store, db):
    data = build_kh03()
    store.put(PREFIX + "a.xlsx", data)
    ingest_all(settings)
    store.put(PREFIX + "b.xlsx", data)

    outcome = ingest_all(settings)[PREFIX + "b.xlsx"]

    assert outcome.status == "duplicate"
    assert db.execute("select count(distinct _file_id) from raw.nhs_kh03_trust_sector").fetchone() == (1,)


@pytest.mark.parametrize(("name", "start", "end"), [(Q2_FILE, date(2020, 7, 1), date(2020, 9, 30)),
                                                    (Q1_FILE, date(2020, 4, 1), date(2020, 6, 30))])
def test_real_2020_21_workbooks_load_with_the_published_england_row(settings, store, db, name, start, end):
    path = shared_data("kh03", name)
    store.put(PREFIX + name, path.read_bytes())

    outcome = ingest_all(settings)[PREFIX + name]

    assert outcome.status == "loaded", outcome.error
    assert db.execute("select period_start, period_end from ops.file_ledger").fetchone() == (start, end)
    cells = openpyxl_row(path, "NHS Trust by Sector", "England")
    got = db.execute("select available, occupied from raw.nhs_kh03_trust_sector__valid "
                     "where is_england and sector = 'General & Acute'").fetchone()
    assert got == (Decimal(repr(cells[("Available", "General & Acute")])),
                   Decimal(repr(cells[("Occupied", "General & Acute")])))
    trusts = {r[4] for r in openpyxl.load_workbook(path, read_only=True)["NHS Trust by Sector"].iter_rows(
        min_row=18, values_only=True) if r[4]}
    assert db.execute("select count(distinct org_code) from raw.nhs_kh03_trust_sector__valid "
                      "where not is_england").fetchone() == (len(trusts),)
    assert db.execute("select count(*) from raw.nhs_kh03_region_sector__valid").fetchone() == (7 * len(SECTORS),)
    assert db.execute("select count(*) from raw.nhs_kh03_specialty__valid").fetchone()[0] > len(trusts) * 10


def test_real_region_only_workbook_loads_its_region_rows_and_england(settings, store, db):
    path = shared_data("kh03", Q3_2025_FILE)
    store.put(PREFIX + Q3_2025_FILE, path.read_bytes())

    outcome = ingest_all(settings)[PREFIX + Q3_2025_FILE]

    assert outcome.status == "loaded", outcome.error
    assert db.execute("select period_start, period_end from ops.file_ledger").fetchone() == (
        date(2025, 10, 1), date(2025, 12, 31))
    assert db.execute("select count(*) from raw.nhs_kh03_trust_sector").fetchone() == (0,)
    cells = openpyxl_row(path, "Region by Sector", "England")
    assert db.execute("select available from raw.nhs_kh03_region_sector__valid where is_england "
                      "and sector = 'General & Acute'").fetchone() == (
        Decimal(repr(cells[("Available", "General & Acute")])),)
    assert db.execute("select count(*) from raw.nhs_kh03_region_sector__valid "
                      "where sector = 'Learning Disabilities' and not is_england").fetchone() == (7,)



def test_elt_validate_checks_a_workbook_as_the_loader_would():
    from elt.config import Settings
    from elt.pipeline import contracts_for
    from elt.readers.validate import validate_bytes

    contract = contracts_for(Settings(), drop_type="nhs_kh03_overnight")["nhs_kh03_overnight"]
    trusts, regions = len(DEFAULT_TRUSTS), len({t.region for t in DEFAULT_TRUSTS})
    good = validate_bytes(contract, build_kh03(), name="beds.xlsx")
    assert (good.status, good.rows_read) == ("valid", (1 + trusts) * 5 + regions * 5 + trusts * len(SPECIALTIES))
    # The quarter it establishes: the generated workbook's period is July to September 2020, 2020-21 Q2.
    assert good.period == {"start": "2020-07-01", "end": "2020-09-30", "label": "2020-21 Q2", "source": "workbook"}
    bad = validate_bytes(contract, build_kh03(Kh03Spec(period_text=None, year=None, period_end=None)), name="beds.xlsx")
    # Read perfectly, but no period can be established: off the contract, not unreadable.
    assert (bad.status, bad.errors[0]["rule"], bad.period) == ("off_contract", "missing_period", None)


def test_a_legacy_xls_workbook_loads_like_the_xlsx(settings, store, db):
    spec = Kh03Spec(first_column=1, region_code_header="SHA Code")  # an older era's layout, in an older format
    data = as_xls(build_kh03(spec))
    assert data[:8] == bytes.fromhex("D0CF11E0A1B11AE1")  # really an OLE2 .xls, not a zip
    store.put(PREFIX + "Beds-Open-Overnight-2010-11.xls", data)

    outcome = ingest_all(settings)[PREFIX + "Beds-Open-Overnight-2010-11.xls"]

    assert outcome.status == "loaded", outcome.error
    barts = DEFAULT_TRUSTS[0]
    assert db.execute("select available, occupied from raw.nhs_kh03_trust_sector__valid "
                      "where org_code = 'R1H' and sector = 'General & Acute'").fetchone() == (
        dec(barts.available[0]), dec(barts.occupied[0]))
    assert db.execute("select count(distinct org_code) from raw.nhs_kh03_specialty__valid").fetchone() == (
        len(DEFAULT_TRUSTS),)


def test_an_older_edition_arriving_after_its_revision_stays_history(settings, store, db):
    revised_barts = Trust("R1H", "BARTS HEALTH NHS TRUST", "Y56", (1500.5, 0.0, 180.25, 0.0), (1400.75, 0.0, 100.5, 0.0))
    revision = Kh03Spec(appended=(revised_barts,), published="18th February 2021")
    store.put(PREFIX + "Beds-Open-Overnight-Web_File-Q2-2020-21-revised.xlsx", build_kh03(revision))
    revised = ingest_all(settings)[PREFIX + "Beds-Open-Overnight-Web_File-Q2-2020-21-revised.xlsx"]
    # The first edition (published 19 November 2020) is dropped again afterwards, e.g. from an old download.
    store.put(PREFIX + "Beds-Open-Overnight-Web_File-Q2-2020-21.xlsx", build_kh03(Kh03Spec()))

    original = ingest_all(settings)[PREFIX + "Beds-Open-Overnight-Web_File-Q2-2020-21.xlsx"]

    assert original.status == "superseded" and f"file {revised.file_id}" in original.error
    assert original.moved_to.startswith(PREFIX + "archive/")  # kept as history, not quarantined
    rows = db.execute("select file_id, status, published_on, superseded_by from ops.file_ledger order by 1").fetchall()
    assert rows == [(revised.file_id, "loaded", date(2021, 2, 18), None),
                    (original.file_id, "superseded", date(2020, 11, 19), revised.file_id)]
    assert db.execute("select count(*) from raw.nhs_kh03_trust_sector where _file_id = %s",
                      (original.file_id,)).fetchone()[0] > 0  # its rows stay in raw

    # A later revision still takes over, in the usual way.
    store.put(PREFIX + "Beds-Open-Overnight-Web_File-Q2-2020-21-revised-2.xlsx",
              build_kh03(Kh03Spec(published="20th May 2021")))
    latest = ingest_all(settings)[PREFIX + "Beds-Open-Overnight-Web_File-Q2-2020-21-revised-2.xlsx"]
    assert latest.status == "loaded"
    assert db.execute("select status, superseded_by from ops.file_ledger where file_id = %s",
                      (revised.file_id,)).fetchone() == ("superseded", latest.file_id)
