"""The incremental provider aggregates and the anomaly list built on them (decision 0022's amendments): nights that
re-send a claim, add a month that moves a procedure's peer median and set a claims file aside give exactly the rows
a full refresh gives, in every column of every row; the per-month tables leave the months they did not touch as they
were, and the anomaly list, scored as of each claim's reporting month, the months before the first that changed.

Small BlueCross files go through the real loader from the S3 endpoint; `dbt build` of the claims selection runs once
on the base, once incrementally after each night, then with --full-refresh. Disclosure control is off
(threshold 1, base 1) so that every count is compared exactly.
"""

from __future__ import annotations

import json
import math
from decimal import Decimal

import pytest

from elt.config import Settings
from elt.families import declared_families
from elt.pipeline import ingest_file
from elt.transform import run_dbt
from tests.conftest import table_contents
from tests.dbt.claims_files import BLUECROSS_HEADER

SELECTION = declared_families(Settings())["claims"].dbt_select()
CHANGED = ("analytics.claim_anomaly_scores", "analytics.provider_claim_metrics", "analytics.provider_cost_outliers",
           "analytics.provider_benford", "core.dim_providers", "core.int_provider_months",
           "core.int_provider_procedure_months", "core.int_provider_payer_months")


def npi(number: int) -> str:
    return f"{1000000000 + number}"


def bluecross_claims(*rows: tuple[str, int, str, str, int]) -> bytes:
    """(claim id, provider number, service day, procedure, allowed) rows: billed twice allowed, paid allowed - 10;
    the member is the provider's (M<provider number>)."""
    lines = [f"{claim},M{provider},{npi(provider)},{day},{day},{day},E11.9,{procedure},{2 * allowed}.00,"
             f"{allowed}.00,{allowed - 10}.00,Paid,Professional\n" for claim, provider, day, procedure, allowed in rows]
    return (BLUECROSS_HEADER + "".join(lines)).encode()


def benford_claims(month: str, count: int) -> bytes:
    """Provider 40's claims of procedure 99212 (nobody else bills it), one member each, every billed amount from 900
    to 999: all first digits 9."""
    lines = [f"B{month}{n:03},MB{month}{n:03},{npi(40)},{month}-05,{month}-05,{month}-05,E11.9,99212,"
             f"{900 + n % 100}.00,400.00,390.00,Paid,Professional\n" for n in range(count)]
    return (BLUECROSS_HEADER + "".join(lines)).encode()


def key(month: str, name: str = "batch") -> str:
    year, number = month.split("-")
    return f"claims/provider=bluecross/year={year}/month={number}/{name}.csv"


# The base. 99213: providers 1 to 11 at 100 to 110 per claim, provider 21 at 125 and provider 12 at 1000: median
# 106, MAD 3 (deviations 0 to 6, 19 and 894), so 12 (z 201) and 21 (z 0.6745 * 19 / 3 = 4.27) are high-cost
# outliers. 99214: eleven providers at 50, no spread, nothing fires. 99215 (too few peers):
# October's O1, November's V1 and V2, December's D1; a later file reporting on September sends V2 and re-sends D1.
BASE = {
    key("2023-10"): bluecross_claims(("O1", 4, "2023-10-02", "99215", 60)),
    key("2023-11"): bluecross_claims(("V1", 1, "2023-11-10", "99215", 70)),
    key("2023-12"): bluecross_claims(("D1", 3, "2023-12-05", "99215", 80)),
    key("2024-01"): bluecross_claims(
        *[(f"J{p}", p, "2024-01-10", "99213", 99 + p) for p in range(1, 12)], ("J12", 12, "2024-01-10", "99213", 1000),
        ("J21", 21, "2024-01-10", "99213", 125),
        *[(f"K{p}", p, "2024-01-12", "99214", 50) for p in range(1, 12)]),
    key("2023-09", "late"): bluecross_claims(("V2", 2, "2023-11-20", "99215", 75), ("D1", 3, "2023-12-05", "99215", 90)),
    # Benford: 150 amounts of provider 40 in January, below the minimum of 300 for a verdict.
    key("2024-01", "benford"): benford_claims("2024-01", 150),
}
# The first night: February re-sends J1 at 130, brings providers 13 to 20 to 99213 at 200 and provider 12's F12 at
# 1000. January is rescored (J1 left it): its 99213 peers are providers 2 to 11 (101-110), 12 (1000) and 21 (125),
# median 106.5 (the 6th and 7th of twelve), MAD 3 (deviations 0.5, 0.5, 1.5, 1.5, 2.5 | 3.5, 3.5, 4.5, 5.5,
# 18.5, 893.5), so J12 and J21 (z 0.6745 * 18.5 / 3 = 4.16) stay outliers as of January. February's peers add provider 1 at 130
# and eight at 200: median 125 (the 11th of 101-110, 125, 130, eight 200s and 1000), MAD 23 (the 11th of 0, 5,
# 15-24, eight 75s, 875): F12 fires (z 0.6745 * 875 / 23 = 25.7), J1 (0.15) and the 200s (2.2) do not; in the
# provider mart, which is as of February, provider 21 (z 0) is no outlier any more.
# February's 150 more make 300 as of February, every first digit a 9: MAD = (2/9) * (1 - log10(10/9)), the share of
# 9 off by 1 - log10(10/9) and the eight others' shares, which add up to log10(9) = 1 - log10(10/9), all missing.
BENFORD_MAD = Decimal(str(round(2 / 9 * (1 - math.log10(10 / 9)), 6)))
NIGHT = {
    key("2024-02", "benford"): benford_claims("2024-02", 150),
    key("2024-02"): bluecross_claims(("J1", 1, "2024-01-10", "99213", 130), ("F12", 12, "2024-02-03", "99213", 1000),
                                     *[(f"F{p}", p, "2024-02-03", "99213", 200) for p in range(13, 21)]),
}
# The second night sets the September file aside: V2 goes (November loses a claim and gains none), D1 falls back to
# December's version and September has no claim left.
SET_ASIDE = key("2023-09", "late")


def load(settings, store, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        store.put(name, data)
        assert ingest_file(name, settings=settings).status == "loaded", name


def row_versions(db, table: str, where: str) -> list[tuple]:
    """The rows' xmin: a row an incremental build did not rewrite keeps it."""
    return db.execute(f"select xmin::text from {table} where {where} order by 1").fetchall()  # noqa: S608 - constants


def cost_reason(db, claim_id: str) -> tuple:
    reasons = db.execute("select reasons from analytics.claim_anomaly_scores where claim_id = %s",
                         (claim_id,)).fetchone()[0]
    return tuple((reason["rule_id"], Decimal(str(reason["peer_value"]))) for reason in reasons
                 if reason["rule_id"] == "cost_outlier")


@pytest.fixture
def claims_settings(settings):
    return settings.model_copy(update={"sdc_threshold": 1, "sdc_rounding_base": 1})


def test_nights_that_move_a_peer_median_re_send_and_set_aside_equal_a_full_refresh(
        claims_settings, store, db, tmp_path):
    settings = claims_settings
    load(settings, store, BASE)
    run_dbt(["build", "--select", *SELECTION, "--target-path", str(tmp_path / "base")], settings=settings)
    assert cost_reason(db, "J12") == (("cost_outlier", Decimal("106")),)
    assert cost_reason(db, "J21") == (("cost_outlier", Decimal("106")),)
    october = {"core.int_provider_months": "service_month = '2023-10-01'",
               "core.int_provider_procedure_months": "reporting_month = '2023-10-01'",
               "core.int_provider_payer_months": "reporting_month = '2023-10-01'"}
    october_before = {table: row_versions(db, table, where) for table, where in october.items()}
    assert all(len(rows) == 2 for rows in october_before.values())  # O1's provider row and the month row

    months_before_january = "reporting_month < '2024-01-01'"
    scores_before_january = row_versions(db, "analytics.claim_anomaly_scores", months_before_january)
    assert len(scores_before_january) == 4  # O1, V1, and V2 and D1 (the September file holds its latest version)

    load(settings, store, NIGHT)
    run_dbt(["build", "--select", *SELECTION, "--target-path", str(tmp_path / "first")], settings=settings)
    assert cost_reason(db, "J12") == (("cost_outlier", Decimal("106.50")),)
    assert cost_reason(db, "J21") == (("cost_outlier", Decimal("106.50")),)
    assert cost_reason(db, "F12") == (("cost_outlier", Decimal("125")),)
    assert [cost_reason(db, claim) for claim in ("J1", "F13", "F20")] == [(), (), ()]
    assert db.execute("select is_high_cost_outlier from analytics.provider_cost_outliers "
                      "where rendering_npi = %s and procedure_code = '99213'", (npi(21),)).fetchone() == (False,)
    # Provider 40's January claims were scored on 150 amounts (no verdict), February's on 300.
    benford = dict(db.execute(
        "select reporting_month::text, array_agg(distinct reasons::text) from analytics.claim_anomaly_scores "
        "where rendering_npi = %s group by 1", (npi(40),)).fetchall())
    assert benford["2024-01-01"] == ["[]"]
    [february] = benford["2024-02-01"]
    assert [(r["rule_id"], Decimal(str(r["statistic"])), r["conformity"]) for r in json.loads(february)] == [
        ("benford_first_digit", BENFORD_MAD, "nonconformity")]
    # A later month leaves the rows of the months before the first it changed as they were.
    assert row_versions(db, "analytics.claim_anomaly_scores", months_before_january) == scores_before_january

    db.execute("update ops.file_ledger set status = 'quarantined' where key = %s", (SET_ASIDE,))
    run_dbt(["build", "--select", *SELECTION, "--target-path", str(tmp_path / "second")], settings=settings)
    nightly = table_contents(db, CHANGED)

    # V2 left with its file; D1 is December's version again; the January claims kept their figures.
    assert cost_reason(db, "J21") == (("cost_outlier", Decimal("106.50")),)
    assert db.execute("select claim_id, allowed_amount, reporting_month::text from analytics.claim_anomaly_scores "
                      "where claim_id in ('V1', 'V2', 'D1', 'J1') order by 1").fetchall() == [
        ("D1", Decimal("80.00"), "2023-12-01"), ("J1", Decimal("130.00"), "2024-02-01"),
        ("V1", Decimal("70.00"), "2023-11-01")]
    assert db.execute("select claim_count from core.int_provider_months where service_month = '2023-11-01' "
                      "and rendering_npi is not null").fetchall() == [(1,)]
    # January's files now hold their 174 claims but J1 (re-sent in February); September's set-aside file none.
    assert db.execute("select reporting_month::text, month_claim_count from core.int_provider_payer_months "
                      "where reporting_month in ('2023-09-01', '2024-01-01') and npi is null").fetchall() == [
        ("2024-01-01", 173)]
    # What nothing touched is the very rows the first build wrote: the month (of service, of reporting) no claim of
    # the nights was in.
    assert {table: row_versions(db, table, where) for table, where in october.items()} == october_before

    run_dbt(["build", "--full-refresh", "--select", *SELECTION, "--target-path", str(tmp_path / "full")],
            settings=settings)
    full = table_contents(db, CHANGED)
    for table in CHANGED:
        assert full[table], table
        assert nightly[table] == full[table], table
