"""The claims core models and PMPM built from the Tuva Project's synthetic claims and eligibility through the real loader.

The seed files are uploaded to the S3 endpoint and loaded by `elt.pipeline.ingest_file`, with a later file that
re-sends one claim with other amounts and one line fewer, and a BlueCross batch with its plain member file; then
`dbt build` builds the claims models and runs their tests. Member months and PMPM are worked out here from the CSVs
with pandas (the contract's one rule the seed breaks, paid above allowed, applied by hand), never read back from the
marts. Disclosure control is off (threshold 1, base 1) so that every figure is exact; its rules have their own
unit tests.
"""

from __future__ import annotations

import uuid
from decimal import ROUND_HALF_UP, Decimal

import pandas as pd
import psycopg
import pytest

from elt.families import declared_families
from elt.pipeline import ingest_file
from elt.transform import run_dbt
from tests.conftest import create_database, drop_database, shared_data

CLAIMS_KEY = "claims/provider=medicare/year=2018/month=12/medical_claim.csv"
RESENT_KEY = "claims/provider=medicare/year=2019/month=01/medical_claim_adjusted.csv"
ELIGIBILITY_KEY = "eligibility/provider=medicare/year=2018/month=12/eligibility.csv"
BLUECROSS_KEY = "claims/provider=bluecross/year=2024/month=01/batch_1.csv"
BLUECROSS_MEMBERS_KEY = "eligibility/provider=bluecross/year=2024/month=01/members.csv"
BLUECROSS = (b"ClaimID,MemberID,ProviderNPI,ClaimDate,ServiceFromDate,ServiceToDate,DiagnosisCode,ProcedureCode,"
             b"BilledAmount,AllowedAmount,PaidAmount,Status,Type\n"
             b"B1,M1,1234567890,2024-01-31,2024-01-10,2024-01-12,E11.9,99213,100.00,90.00,80.00,Paid,Professional\n")
BLUECROSS_MEMBERS = (b"member_id,payer,plan,start_date,end_date,birth_date,sex\n"
                     b"M1,BlueCross,ppo,2023-12-15,,1980-02-03,F\n")


def money(value) -> Decimal:
    return Decimal("0") if pd.isna(value) else Decimal(str(value))


def cents(value: Decimal) -> Decimal:
    return value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def month_of(day: str) -> str:
    return day[:7] + "-01"


@pytest.fixture(scope="module")
def tuva() -> dict[str, pd.DataFrame]:
    claims = pd.read_csv(shared_data("claims_tuva", "medical_claim_seed.csv"), dtype=str)
    eligibility = pd.read_csv(shared_data("claims_tuva", "eligibility_seed.csv"), dtype=str)
    return {"claims": claims, "eligibility": eligibility}


def resent_claim(claims: pd.DataFrame) -> tuple[str, pd.DataFrame]:
    """A professional claim of three lines, none rejected, re-sent as its first two lines with paid and allowed
    halved (an adjustment)."""
    paid, allowed = pd.to_numeric(claims["paid_amount"]), pd.to_numeric(claims["allowed_amount"])
    clean = claims[~(paid > allowed)]
    sizes = clean.groupby("claim_id").size()
    candidates = sorted(claim for claim in sizes[sizes == 3].index
                        if (claims["claim_id"] == claim).sum() == 3
                        and clean.loc[clean["claim_id"] == claim, "paid_amount"].notna().all())
    claim = candidates[0]
    lines = claims[(claims["claim_id"] == claim) & claims["claim_line_number"].isin(["1", "2"])].copy()
    for column in ("paid_amount", "allowed_amount"):
        lines[column] = [str(cents(Decimal(v) / 2)) for v in lines[column]]
    return claim, lines


def expected_lines(claims: pd.DataFrame, claim: str, resent: pd.DataFrame) -> pd.DataFrame:
    """The current lines, worked out from the CSVs: the contract's rule paid <= allowed drops a line (the only one
    the seed breaks), and the re-sent claim's lines are the later file's."""
    paid, allowed = pd.to_numeric(claims["paid_amount"]), pd.to_numeric(claims["allowed_amount"])
    loaded = claims[~(paid > allowed)]
    return pd.concat([loaded[loaded["claim_id"] != claim], resent])


def expected_member_months(eligibility: pd.DataFrame) -> set[tuple[str, str]]:
    months = set()
    for row in eligibility.itertuples():
        for month in pd.period_range(row.enrollment_start_date[:7], row.enrollment_end_date[:7], freq="M"):
            months.add((row.member_id, f"{month}-01"))
    return months


def expected_pmpm(lines: pd.DataFrame, member_months: set[tuple[str, str]]) -> set[tuple]:
    claims = {}
    for claim_id, claim_lines in lines.groupby("claim_id"):
        first = claim_lines.sort_values("claim_line_number", key=lambda n: n.astype(int)).iloc[0]
        claims[claim_id] = {
            "member_id": first["member_id"], "claim_type": first["claim_type"],
            "month": month_of(min(claim_lines["claim_start_date"])),
            "paid": sum(map(money, claim_lines["paid_amount"]), Decimal(0)),
            "allowed": sum(map(money, claim_lines["allowed_amount"]), Decimal(0))}
    enrolled: dict[str, int] = {}
    for _, month in member_months:
        enrolled[month] = enrolled.get(month, 0) + 1
    groups: dict[tuple, list] = {}
    for claim in claims.values():
        plan = "medicare" if (claim["member_id"], claim["month"]) in member_months else "not enrolled"
        for claim_type in (claim["claim_type"], "all"):
            group = groups.setdefault((plan, claim["month"], claim_type), [0, Decimal(0), Decimal(0)])
            group[0] += 1
            group[1] += claim["paid"]
            group[2] += claim["allowed"]
    for month in enrolled:
        groups.setdefault(("medicare", month, "all"), [0, Decimal(0), Decimal(0)])
    rows = set()
    for (plan, month, claim_type), (count, paid, allowed) in groups.items():
        months = enrolled.get(month, 0) if plan == "medicare" else 0
        rates = (cents(paid / months), cents(allowed / months)) if months else (None, None)
        rows.add(("medicare", plan, month, claim_type, months, count, paid, allowed, *rates))
    return rows


def query(settings, statement: str, params: tuple = ()) -> list[tuple]:
    with psycopg.connect(settings.database_url) as conn:
        return conn.execute(statement, params).fetchall()


@pytest.fixture(scope="module")
def built(pg_server_url, s3_endpoint_url, warehouse_template, tuva, tmp_path_factory):
    """One warehouse for the module: the files loaded in arrival order, the claims models built and tested once."""
    import boto3

    from elt.config import Settings
    from elt.storage.s3 import ObjectStore

    suffix = uuid.uuid4().hex[:10]
    database = f"hw_claims_{suffix}"
    url = create_database(pg_server_url, database, template=warehouse_template)
    bucket = f"landing-claims-{suffix}"
    boto3.client("s3", endpoint_url=s3_endpoint_url, region_name="us-east-1").create_bucket(Bucket=bucket)
    settings = Settings(database_url=url, s3_endpoint_url=s3_endpoint_url, s3_bucket=bucket, sdc_threshold=1,
                        sdc_rounding_base=1)
    store = ObjectStore(settings)
    claim, resent = resent_claim(tuva["claims"])
    files = {
        CLAIMS_KEY: shared_data("claims_tuva", "medical_claim_seed.csv").read_bytes(),
        ELIGIBILITY_KEY: shared_data("claims_tuva", "eligibility_seed.csv").read_bytes(),
        RESENT_KEY: resent.to_csv(index=False).encode(),
        BLUECROSS_KEY: BLUECROSS,
        BLUECROSS_MEMBERS_KEY: BLUECROSS_MEMBERS,
    }
    for key, data in files.items():  # in this order: the re-sent claim arrives after the seed
        store.put(key, data)
        assert ingest_file(key, settings=settings).status == "loaded", key
    run_dbt(["build", "--select", *declared_families(settings)["claims"].dbt_select(),
             "--target-path", str(tmp_path_factory.mktemp("claims_target"))], settings=settings)
    yield settings, claim, resent
    drop_database(pg_server_url, database)


def test_member_months_are_the_months_the_tuva_spans_touch(built, tuva):
    settings, _, _ = built
    expected = expected_member_months(tuva["eligibility"])

    rows = query(settings, "select member_id, month::text, plan from core.fct_member_months where payer = 'medicare'")

    assert {(member, month) for member, month, _ in rows} == expected
    assert len(rows) == len(expected) > 100 and {plan for *_, plan in rows} == {"medicare"}


def test_pmpm_by_plan_month_and_claim_type_is_the_calculation_from_the_csvs(built, tuva):
    settings, claim, resent = built
    lines = expected_lines(tuva["claims"], claim, resent)
    expected = expected_pmpm(lines, expected_member_months(tuva["eligibility"]))

    rows = query(settings, "select payer, plan, month::text, claim_type, member_months, claim_count, paid_amount, "
                           "allowed_amount, paid_pmpm, allowed_pmpm from analytics.claims_pmpm where payer = 'medicare'")

    assert set(rows) == expected and len(rows) == len(expected)
    assert any(row[1] == "not enrolled" for row in rows)  # claims outside the spans: no rate, no division by zero
    assert all(row[8] is None for row in rows if row[4] == 0)


def test_a_re_sent_claim_replaces_every_line_of_the_earlier_version_and_history_stays_in_staging(built, tuva):
    settings, claim, resent = built
    resent_file = query(settings, "select file_id from ops.file_ledger where key = %s", (RESENT_KEY,))[0][0]

    current = query(settings, "select file_id, claim_line_number, paid_amount, allowed_amount from core.fct_claim_lines "
                              "where payer = 'medicare' and claim_id = %s order by 2", (claim,))
    assert current == [(resent_file, int(row.claim_line_number), Decimal(row.paid_amount), Decimal(row.allowed_amount))
                       for row in resent.itertuples()]
    totals = query(settings, "select line_count, paid_amount from core.fct_claims where claim_id = %s", (claim,))
    assert totals == [(2, sum(Decimal(v) for v in resent["paid_amount"]))]
    arrivals = query(settings, "select file_id, count(*) from staging.stg_claims__claim_lines where claim_id = %s "
                               "group by 1 order by 1", (claim,))
    assert [count for _, count in arrivals] == [3, 2]
    # Every other claim is there once, as the seed sent it.
    lines = expected_lines(tuva["claims"], claim, resent)
    assert query(settings, "select count(*), count(distinct claim_id) from core.fct_claim_lines "
                           "where payer = 'medicare'") == [(len(lines), lines["claim_id"].nunique())]


def test_the_payer_layouts_join_the_same_models_with_their_payer_from_the_key(built):
    settings, _, _ = built
    assert query(settings, "select payer, claim_id, claim_line_number, units, billing_npi, member_key is not null "
                           "from core.fct_claim_lines where payer = 'bluecross'") == [
        ("bluecross", "B1", 1, Decimal(1), None, True)]
    # Enrolled from 2023-12-15 with no end: through January 2024, the month the member file reports on.
    assert query(settings, "select month::text from core.fct_member_months where payer = 'bluecross' order by 1") == [
        ("2023-12-01",), ("2024-01-01",)]
    assert query(settings, "select plan, sex, birth_date::text, last_enrolled_on::text from core.dim_members "
                           "where payer = 'bluecross'") == [("ppo", "female", "1980-02-03", "2024-01-31")]
    assert query(settings, "select member_months, claim_count, paid_pmpm from analytics.claims_pmpm "
                           "where payer = 'bluecross' and month = '2024-01-01' and claim_type = 'all'") == [
        (1, 1, Decimal("80.00"))]


def test_no_personal_column_of_the_tuva_files_is_stored(built):
    settings, _, _ = built
    stored = {name for (name,) in query(
        settings, "select column_name from information_schema.columns where table_schema = 'raw' "
                  "and table_name in ('claims', 'claims__valid', 'eligibility', 'eligibility__valid')")}
    assert {"member_id", "birth_date", "claim_id"} <= stored  # the columns the contracts read
    assert not stored & {"person_id", "first_name", "last_name", "social_security_number", "address", "phone",
                         "email", "zip_code", "subscriber_id"}
    analytics = {name for (name,) in query(
        settings, "select column_name from information_schema.columns where table_schema = 'analytics' "
                  "and table_name = 'claims_pmpm'")}
    assert not analytics & {"member_id", "member_key", "birth_date", "sex"}


def test_providers_count_their_current_claims(built, tuva):
    settings, claim, resent = built
    lines = expected_lines(tuva["claims"], claim, resent)
    npi = lines["rendering_npi"].value_counts().index[0]
    claims = set(lines.loc[(lines["rendering_npi"] == npi) | (lines["billing_npi"] == npi), "claim_id"])

    assert query(settings, "select claims, payers from core.dim_providers where npi = %s", (npi,)) == [
        (len(claims), ["medicare"])]

