"""The incremental claims models (decision 0028): a nightly build after re-sent claims, a re-sent member file and a
claims file set aside by hand gives exactly the core and marts rows a full refresh gives, and leaves the claims
nobody re-sent as they were.

The Tuva Project's synthetic claims and eligibility and small BlueCross files go through the real loader from the
S3 endpoint, as in test_claims_marts.py; `dbt build` of the claims selection runs once on the base, once
incrementally after the next night's files, then with --full-refresh. Disclosure control is off (threshold 1,
base 1) so that every figure of claims_pmpm is compared exactly.
"""

from __future__ import annotations

from decimal import Decimal

import pandas as pd
import pytest

from elt.config import Settings
from elt.families import declared_families
from elt.pipeline import ingest_file
from elt.transform import run_dbt
from tests.conftest import shared_data, table_contents
from tests.dbt.claims_files import bluecross_claims, bluecross_members

SELECTION = declared_families(Settings())["claims"].dbt_select()  # its folders and the shared ledger view
CORE_AND_MARTS = ("core.fct_claim_lines", "core.fct_claims", "core.int_claim_arrivals",
                  "core.int_current_eligibility", "core.dim_members", "core.dim_providers", "core.fct_member_months",
                  "analytics.claims_pmpm")
# Compared too, but may be empty on these files (no claim here is sent twice unchanged or under a second id).
MAYBE_EMPTY = ("analytics.duplicate_claims",)


# key -> contents, loaded in this order. The base:
BASE = {
    "claims/provider=medicare/year=2018/month=12/medical_claim.csv": None,  # the Tuva seed
    "eligibility/provider=medicare/year=2018/month=12/eligibility.csv": None,
    "claims/provider=bluecross/year=2023/month=12/batch.csv": bluecross_claims(("B3", "M3", "2023-12-05", 30)),
    "claims/provider=bluecross/year=2024/month=01/batch.csv": bluecross_claims(
        ("B1", "M1", "2024-01-10", 80), ("B2", "M2", "2024-01-11", 50), ("B3", "M3", "2023-12-05", 35)),
    "eligibility/provider=bluecross/year=2024/month=01/members.csv": bluecross_members(
        "M1,BlueCross,ppo,2023-12-15,,1980-02-03,F", "M2,BlueCross,hmo,2023-06-01,,1975-07-08,M",
        "M3,BlueCross,ppo,2023-01-01,2023-12-31,1990-01-01,F"),
}
SET_ASIDE = "claims/provider=bluecross/year=2024/month=01/batch.csv"
# The next night: the Tuva claim re-sent a month later with a line fewer and its amounts halved; BlueCross's
# February batch re-sending B1 (a January claim) with other amounts and a new claim; a member file that ends M1's
# ppo span in January and starts an hmo one, and enrols M4.
RESENT_TUVA = "claims/provider=medicare/year=2019/month=01/medical_claim_adjusted.csv"
NIGHT = {
    "claims/provider=bluecross/year=2024/month=02/batch.csv": bluecross_claims(
        ("B1", "M1", "2024-01-10", 60), ("B4", "M4", "2024-02-03", 20)),
    "eligibility/provider=bluecross/year=2024/month=02/members.csv": bluecross_members(
        "M1,BlueCross,ppo,2023-12-15,2024-01-31,1980-02-03,F", "M1,BlueCross,hmo,2024-02-01,,1980-02-03,F",
        "M4,BlueCross,hmo,2024-02-01,,2001-04-05,M"),
}


def resent_tuva_claim(claims: pd.DataFrame) -> tuple[str, bytes]:
    """A claim of three lines that all load (paid at most allowed, paid sent), re-sent as two with amounts halved."""
    paid, allowed = pd.to_numeric(claims["paid_amount"]), pd.to_numeric(claims["allowed_amount"])
    loads = claims.assign(ok=~(paid > allowed) & claims["paid_amount"].notna())
    per_claim = loads.groupby("claim_id")["ok"].agg(["size", "all"])
    claim = sorted(per_claim[(per_claim["size"] == 3) & per_claim["all"]].index)[0]
    lines = claims[(claims["claim_id"] == claim) & claims["claim_line_number"].isin(["1", "2"])].copy()
    for column in ("paid_amount", "allowed_amount"):
        lines[column] = [str((Decimal(v) / 2).quantize(Decimal("0.01"))) for v in lines[column]]
    return claim, lines.to_csv(index=False).encode()


def contents(db) -> dict[str, list[tuple]]:
    """The claims core models and marts, every column but built_at (tests/conftest.py table_contents)."""
    return table_contents(db, CORE_AND_MARTS + MAYBE_EMPTY)


def load(settings, store, files: dict[str, bytes]) -> None:
    for key, data in files.items():
        store.put(key, data)
        assert ingest_file(key, settings=settings).status == "loaded", key


@pytest.fixture
def claims_settings(settings):
    return settings.model_copy(update={"sdc_threshold": 1, "sdc_rounding_base": 1})


def test_a_nightly_build_after_re_sends_equals_a_full_refresh_and_keeps_the_other_claims(
        claims_settings, store, db, tmp_path):
    settings = claims_settings
    seed = shared_data("claims_tuva", "medical_claim_seed.csv")
    claim, resent = resent_tuva_claim(pd.read_csv(seed, dtype=str))
    base = {**BASE, "claims/provider=medicare/year=2018/month=12/medical_claim.csv": seed.read_bytes(),
            "eligibility/provider=medicare/year=2018/month=12/eligibility.csv":
                shared_data("claims_tuva", "eligibility_seed.csv").read_bytes()}
    load(settings, store, base)
    run_dbt(["build", "--select", *SELECTION, "--target-path", str(tmp_path / "base")], settings=settings)
    untouched = "select claim_id, claim_line_number, xmin::text from core.fct_claim_lines where claim_id <> %s"
    before = db.execute(untouched + " and payer = 'medicare' order by 1, 2", (claim,)).fetchall()
    assert len(before) > 1000

    load(settings, store, {RESENT_TUVA: resent, **NIGHT})
    db.execute("update ops.file_ledger set status = 'quarantined' where key = %s", (SET_ASIDE,))
    run_dbt(["build", "--select", *SELECTION, "--target-path", str(tmp_path / "nightly")], settings=settings)
    nightly = contents(db)

    # The claims nobody re-sent are the very rows the first build wrote.
    assert db.execute(untouched + " and payer = 'medicare' order by 1, 2", (claim,)).fetchall() == before
    # The re-sent claim is its two new lines, from the later month's file.
    current = db.execute("select claim_line_number, reporting_month::text, paid_amount from core.fct_claim_lines "
                         "where payer = 'medicare' and claim_id = %s order by 1", (claim,)).fetchall()
    sent = pd.read_csv(seed, dtype=str)
    halved = [(Decimal(v) / 2).quantize(Decimal("0.01"))
              for v in sent.loc[sent["claim_id"] == claim].sort_values("claim_line_number")["paid_amount"][:2]]
    assert current == [(1, "2019-01-01", halved[0]), (2, "2019-01-01", halved[1])]
    # BlueCross: B1 is February's version; January's file set aside takes B2 with it and gives B3 back its
    # December version; B4 is new.
    assert db.execute("select claim_id, reporting_month::text, paid_amount, line_count from core.fct_claims "
                      "where payer = 'bluecross' order by 1").fetchall() == [
        ("B1", "2024-02-01", Decimal(60), 1), ("B3", "2023-12-01", Decimal(30), 1), ("B4", "2024-02-01", Decimal(20), 1)]
    # M1's spans are February's file's; M2 and M3 keep January's.
    assert db.execute("select member_id, plan, month::text from core.fct_member_months where payer = 'bluecross' "
                      "and month >= '2024-01-01' order by 1, 3").fetchall() == [
        ("M1", "ppo", "2024-01-01"), ("M1", "hmo", "2024-02-01"), ("M2", "hmo", "2024-01-01"),
        ("M4", "hmo", "2024-02-01")]

    run_dbt(["build", "--full-refresh", "--select", *SELECTION, "--target-path", str(tmp_path / "full")],
            settings=settings)
    full = contents(db)
    for table in CORE_AND_MARTS + MAYBE_EMPTY:
        assert nightly[table] == full[table], table
    assert all(full[table] for table in CORE_AND_MARTS)


def test_a_file_that_loaded_during_a_build_does_not_overwrite_a_later_version_and_a_member_file_set_aside(
        claims_settings, store, db, tmp_path):
    """February's batch commits while a build runs (the build does not see it) and March's, re-sending the same
    claim, after: the next build takes February in but keeps March's version. January's member file set aside
    takes its members' spans with it where no later file sent them."""
    settings = claims_settings
    months = {month: f"claims/provider=bluecross/year=2024/month={month:02d}/batch.csv" for month in (1, 2, 3)}
    members = "eligibility/provider=bluecross/year=2024/month=01/members.csv"
    load(settings, store, {
        months[1]: bluecross_claims(("B1", "M1", "2024-01-10", 80), ("B2", "M2", "2024-01-11", 50)),
        members: bluecross_members("M1,BlueCross,ppo,2023-12-15,,1980-02-03,F",
                                   "M2,BlueCross,hmo,2023-06-01,,1975-07-08,M"),
        months[2]: bluecross_claims(("B1", "M1", "2024-01-10", 70)),
    })
    hide = "update ops.file_ledger set status = %s where key = %s"
    db.execute(hide, ("loading", months[2]))  # February's load has not committed when the build reads the ledger
    run_dbt(["build", "--select", *SELECTION, "--target-path", str(tmp_path / "base")], settings=settings)
    load(settings, store, {
        months[3]: bluecross_claims(("B1", "M1", "2024-01-10", 60)),
        "eligibility/provider=bluecross/year=2024/month=02/members.csv": bluecross_members(
            "M1,BlueCross,ppo,2023-12-15,,1980-02-03,F"),
    })
    run_dbt(["build", "--select", *SELECTION, "--target-path", str(tmp_path / "march")], settings=settings)
    db.execute(hide, ("loaded", months[2]))
    db.execute(hide, ("quarantined", members))

    run_dbt(["build", "--select", *SELECTION, "--target-path", str(tmp_path / "nightly")], settings=settings)
    nightly = contents(db)

    assert db.execute("select claim_id, reporting_month::text, paid_amount from core.fct_claims "
                      "order by 1").fetchall() == [("B1", "2024-03-01", Decimal(60)), ("B2", "2024-01-01", Decimal(50))]
    # M2 came only in January's member file: no spans, no member months; still a member (a claim) with no plan.
    assert db.execute("select member_id, min(month)::text, max(month)::text from core.fct_member_months "
                      "group by 1 order by 1").fetchall() == [("M1", "2023-12-01", "2024-02-01")]
    assert db.execute("select member_id, plan from core.dim_members order by 1").fetchall() == [
        ("M1", "ppo"), ("M2", None)]
    run_dbt(["build", "--full-refresh", "--select", *SELECTION, "--target-path", str(tmp_path / "full")],
            settings=settings)
    full = contents(db)
    for table in CORE_AND_MARTS:
        assert nightly[table] == full[table], table
