"""The claims analytics marts (dbt/models/analytics/claims) built by real dbt from hand-made payer files that the
real loader took from the S3 endpoint. Each anomaly rule is fired by a claim crafted for it, and its score and
reasons are written here, worked out by hand (docs/claims-anomaly-rules.md); the peer figures are computed here
with pandas and math from the claims below, never read back from the warehouse.
"""

from __future__ import annotations

import math
import uuid
from datetime import date
from decimal import Decimal
from pathlib import Path

import pandas as pd
import psycopg
import pytest
import yaml

from elt.config import Settings
from elt.families import declared_families
from elt.pipeline import ingest_file
from elt.transform import run_dbt
from tests.conftest import create_database, drop_database
from tests.disclosure import published

BLUECROSS = ("ClaimID,MemberID,ProviderNPI,ClaimDate,ServiceFromDate,ServiceToDate,DiagnosisCode,ProcedureCode,"
             "BilledAmount,AllowedAmount,PaidAmount,Status,Type")
AETNA = ("claim_number,patient_id,provider_tax_id,claim_received_date,service_date,admit_date,discharge_date,"
         "primary_diagnosis,procedure,charge_amount,approved_amount,payment_amount,claim_status,service_category")
UNITED = ("CLAIM_ID,SUBSCRIBER_ID,RENDERING_PROVIDER_NPI,RECEIVED_DT,SVC_FROM_DT,SVC_TO_DT,DIAG_CD,PROC_CD,"
          "BILLED_AMT,ALLOWED_AMT,PAID_AMT,CLM_STATUS,CLM_TYPE")

# Cost outlier: twelve providers bill 99214 once each (twelve peers, at least the minimum of 11); 1000000012's
# claim P12 costs 400 against a median of 100. P12 is also received on 20 January for service up to the 22nd.
PEER_ALLOWED = [90, 95, 100, 100, 105, 110, 100, 95, 105, 100, 90, 400]
# Below the minimum: ten providers bill 99215, one of them fifty times the others: no verdict, no reason.
FEW_PEER_ALLOWED = [100] * 9 + [5000]


def bc(claim_id, member, npi, claimed, start, end, procedure, billed, allowed, paid, status="Paid"):
    return ",".join([claim_id, member, npi, claimed, start, end, "E11.9", procedure, str(billed), str(allowed),
                     str(paid), status, "Professional"])


def january_bluecross() -> list[str]:
    rows = [bc(f"P{n:02}", f"MP{n:02}", f"10000000{n:02}", "2024-01-20", "2024-01-10",
               "2024-01-22" if n == 12 else "2024-01-10", "99214", 1000, allowed, allowed)
            for n, allowed in enumerate(PEER_ALLOWED, start=1)]
    rows += [bc(f"Q{n:02}", f"MQ{n:02}", f"10000000{n:02}", "2024-01-20", "2024-01-11", "2024-01-11", "99215",
                6000, allowed, allowed) for n, allowed in enumerate(FEW_PEER_ALLOWED, start=1)]
    rows += [
        # Suspected duplicates: same member, provider, day of service and procedure, two claim ids; D1 came first.
        bc("D1", "MD", "2000000001", "2024-01-06", "2024-01-05", "2024-01-05", "99213", 100, 80, 70),
        bc("D2", "MD", "2000000001", "2024-01-15", "2024-01-05", "2024-01-05", "99213", 100, 80, 70),
        # Service after the claim was received: received on the 10th for service until the 15th (5 days).
        bc("S1", "MS", "2000000002", "2024-01-10", "2024-01-08", "2024-01-15", "99213", 100, 80, 70),
        # Sent again unchanged in February (an exact re-send), and A1 adjusted in February (paid 50 -> 60).
        bc("R1", "MR", "2000000003", "2024-01-12", "2024-01-11", "2024-01-11", "99213", 100, 80, 70),
        bc("A1", "MA", "2000000004", "2024-01-12", "2024-01-11", "2024-01-11", "99213", 100, 80, 50),
    ]
    return rows


def february_bluecross() -> list[str]:
    # R1 spelled 100.00 where January wrote 100: the same amount, so the same content.
    return [bc("R1", "MR", "2000000003", "2024-01-12", "2024-01-11", "2024-01-11", "99213", "100.00", 80, 70),
            bc("A1", "MA", "2000000004", "2024-01-12", "2024-01-11", "2024-01-11", "99213", 100, 80, 60)]


def us(day: date) -> str:
    return day.strftime("%m/%d/%Y")


def stay(claim_id, member, npi, admit: date, discharge: date, received: date) -> str:
    return ",".join([claim_id, member, npi, us(received), us(admit), us(admit), us(discharge), "I10", "99223",
                     '"$1,500.00"', '"$1,000.00"', "$900.00", "Paid", "Inpatient"])


# Readmissions: twenty members discharged by 3000000001 on 6 January; members 1-10 are admitted again by
# 3000000002 on the 20th (14 days later), members 11-20 on 20 February (45 days: not a readmission).
INDEX_ADMIT, INDEX_DISCHARGE = date(2024, 1, 2), date(2024, 1, 6)
# Implausible length of stay: admitted 1 January, discharged 15 April 2024.
LONG_ADMIT, LONG_DISCHARGE = date(2024, 1, 1), date(2024, 4, 15)


def aetna_stays() -> list[str]:
    rows = [stay("L1", "ML", "3000000009", LONG_ADMIT, LONG_DISCHARGE, date(2024, 4, 20))]
    for n in range(1, 21):
        rows.append(stay(f"I{n:02}", f"MI{n:02}", "3000000001", INDEX_ADMIT, INDEX_DISCHARGE, date(2024, 1, 9)))
        admit = date(2024, 1, 20) if n <= 10 else date(2024, 2, 20)
        discharge = date(admit.year, admit.month, 23 if n <= 10 else 22)
        rows.append(stay(f"J{n:02}", f"MI{n:02}", "3000000002", admit, discharge, date(2024, 2, 25)))
    return rows


# Benford: provider 4000000001 bills 300 claims (the minimum) of 900 to 999: every first digit a 9. Every fifth
# claim is denied (allowed and paid 0); the others are allowed 800 and paid 700.
BENFORD = [(f"U{n:03}", f"MU{n:03}", 900 + n % 100, n % 5 == 0) for n in range(1, 301)]


def united_benford() -> list[str]:
    return [",".join([claim_id, member, "4000000001", "20240131", f"202401{1 + n % 28:02}", f"202401{1 + n % 28:02}",
                      "J45", "99212", str(billed), "0" if denied else "800", "0" if denied else "700",
                      "Denied" if denied else "Paid", "Professional"])
            for n, (claim_id, member, billed, denied) in enumerate(BENFORD)]


FILES = {
    "claims/provider=bluecross/year=2024/month=01/batch1.csv": [BLUECROSS, *january_bluecross()],
    "claims/provider=aetna/year=2024/month=01/stays.csv": [AETNA, *aetna_stays()],
    "claims/provider=unitedhealth/year=2024/month=01/batch.csv": [UNITED, *united_benford()],
    # Loaded last: its claims are the latest arrivals.
    "claims/provider=bluecross/year=2024/month=02/batch1.csv": [BLUECROSS, *february_bluecross()],
}


def query(settings, sql: str, params: tuple = ()) -> list[tuple]:
    with psycopg.connect(settings.database_url) as conn:
        return conn.execute(sql, params).fetchall()


# Every claims model: the marts read claims and eligibility both (dim_members, claims_pmpm).
CLAIMS_MODELS = declared_families(Settings())["claims"].dbt_select()  # its folders and the shared ledger view


@pytest.fixture(scope="module")
def marts(pg_server_url, s3_endpoint_url, warehouse_template, tmp_path_factory):
    """One warehouse for the module: the four files loaded in order through the loader, then the claims models
    and their data tests built by dbt."""
    import boto3

    from elt.config import Settings
    from elt.storage.s3 import ObjectStore

    suffix = uuid.uuid4().hex[:10]
    database = f"hw_claims_{suffix}"
    url = create_database(pg_server_url, database, template=warehouse_template)
    bucket = f"landing-claims-{suffix}"
    boto3.client("s3", endpoint_url=s3_endpoint_url, region_name="us-east-1").create_bucket(Bucket=bucket)
    settings = Settings(database_url=url, s3_endpoint_url=s3_endpoint_url, s3_bucket=bucket)
    store = ObjectStore(settings)
    for key, lines in FILES.items():
        store.put(key, ("\n".join(lines) + "\n").encode())
        outcome = ingest_file(key, settings=settings)
        assert (outcome.status, outcome.rows_rejected) == ("loaded", 0), (key, outcome.error)
    target = tmp_path_factory.mktemp("claims_target")
    run_dbt(["build", "--select", *CLAIMS_MODELS, "--target-path", str(target)], settings=settings)
    yield settings
    drop_database(pg_server_url, database)


def scores(settings) -> dict[str, tuple[Decimal, list]]:
    return {claim_id: (score, reasons) for claim_id, score, reasons in query(
        settings, "select claim_id, anomaly_score, reasons from analytics.claim_anomaly_scores")}


def benford_mad(amounts: list[int]) -> float:
    shares = pd.Series([int(str(a)[0]) for a in amounts]).value_counts(normalize=True)
    return sum(abs(shares.get(d, 0.0) - math.log10(1 + 1 / d)) for d in range(1, 10)) / 9


def test_every_current_claim_is_scored_once_and_only_the_crafted_ones_score(marts):
    found = scores(marts)
    expected_claims = {f"P{n:02}" for n in range(1, 13)} | {f"Q{n:02}" for n in range(1, 11)} | {
        "D1", "D2", "S1", "R1", "A1", "L1"} | {f"I{n:02}" for n in range(1, 21)} | {f"J{n:02}" for n in range(1, 21)} | {
        claim_id for claim_id, *_ in BENFORD}
    assert set(found) == expected_claims  # R1 and A1 once each, though sent twice
    flagged = {claim_id for claim_id, (score, _) in found.items() if score > 0}
    assert flagged == {"P12", "D2", "S1", "L1"} | {claim_id for claim_id, *_ in BENFORD}
    assert all(reasons == [] for claim_id, (score, reasons) in found.items() if claim_id not in flagged)


def test_a_cost_outlier_that_was_also_billed_before_its_service_ended_sums_both_weights(marts):
    peers = pd.Series(PEER_ALLOWED, dtype=float)
    median = peers.median()
    mad = (peers - median).abs().median()
    assert (median, mad) == (100.0, 5.0)
    score, reasons = scores(marts)["P12"]
    assert score == Decimal("0.60")  # cost_outlier 0.3 + service_after_received 0.3
    assert [r["rule_id"] for r in reasons] == ["cost_outlier", "service_after_received"]
    cost, late = reasons
    assert cost["statistic"] == 400 and cost["peer_value"] == median and cost["weight"] == 0.3
    assert cost["robust_z"] == pytest.approx(round(0.6745 * (400 - median) / mad, 4))  # 40.47
    assert (cost["procedure_code"], cost["peer_provider_count"]) == ("99214", 12)
    assert late == {"rule_id": "service_after_received", "statistic": 2, "peer_value": 0, "weight": 0.3}


def test_duplicate_service_after_receipt_and_length_of_stay_each_fire_on_their_claim(marts):
    found = scores(marts)
    assert found["D2"] == (Decimal("0.40"), [{"rule_id": "duplicate", "statistic": 2, "peer_value": 1, "weight": 0.4,
                                              "original_claim_id": "D1"}])
    assert found["D1"] == (Decimal("0.00"), [])  # the original of the pair
    assert found["S1"] == (Decimal("0.30"), [{"rule_id": "service_after_received", "statistic": 5, "peer_value": 0,
                                              "weight": 0.3}])
    assert (LONG_DISCHARGE - LONG_ADMIT).days == 105
    assert found["L1"] == (Decimal("0.20"), [{"rule_id": "implausible_length_of_stay", "statistic": 105,
                                              "peer_value": 60, "weight": 0.2}])


def test_benford_fires_on_every_claim_of_a_provider_whose_first_digits_do_not_conform(marts):
    mad = benford_mad([billed for _, _, billed, _ in BENFORD])
    assert mad == pytest.approx(2 * (1 - math.log10(10 / 9)) / 9)  # all nines: 0.212
    found = scores(marts)
    for claim_id, *_ in BENFORD:
        score, reasons = found[claim_id]
        assert score == Decimal("0.10")
        assert reasons == [{"rule_id": "benford_first_digit", "statistic": pytest.approx(round(mad, 6)),
                            "peer_value": 0.015, "weight": 0.1, "conformity": "nonconformity"}]
    verdicts = {npi: row for npi, *row in query(
        marts, "select rendering_npi, has_verdict, conformity, first_digit_mad, claim_count "
               "from analytics.provider_benford")}
    assert verdicts["4000000001"] == [True, "nonconformity", Decimal(str(round(mad, 6))), 300]
    # Fewer amounts than the minimum (300): no verdict (1000000012 has one claim, withheld; 3000000001 twenty).
    assert verdicts["1000000012"] == [False, None, None, None]
    assert verdicts["3000000001"] == [False, None, None, 20]


def test_provider_cost_outliers_give_a_verdict_only_with_enough_peers(marts):
    rows = {(npi, code): row for npi, code, *row in query(
        marts, "select rendering_npi, procedure_code, has_verdict, allowed_per_claim, peer_provider_count, "
               "peer_median_allowed_per_claim, peer_mad, robust_z, cost_percentile, is_high_cost_outlier, "
               "claim_count, is_claim_count_suppressed from analytics.provider_cost_outliers")}
    peers = pd.Series(PEER_ALLOWED, dtype=float)
    median = peers.median()
    mad = (peers - median).abs().median()
    percentile = (peers.rank(method="min") - 1) / (len(peers) - 1)
    for n, allowed in enumerate(PEER_ALLOWED, start=1):
        z = round(0.6745 * (allowed - median) / mad, 4)
        assert rows[(f"10000000{n:02}", "99214")] == [
            True, Decimal(allowed).quantize(Decimal("0.01")), 12, Decimal("100.00"), Decimal("5.00"),
            Decimal(str(z)).quantize(Decimal("0.0001")), Decimal(str(round(percentile[n - 1], 4))), z > 3.5,
            None, True]  # one claim each: withheld
    # Ten peers: below the minimum of 11, the 5000 claim has no verdict (and no peer figures).
    assert rows[("1000000010", "99215")] == [False, Decimal("5000.00"), 10, None, None, None, None, None, None, True]


def test_duplicate_claims_lists_exact_resends_and_suspected_pairs(marts):
    file_ids = dict(query(marts, "select key, file_id from ops.file_ledger"))
    january, february = (file_ids[f"claims/provider=bluecross/year=2024/month={m}/batch1.csv"] for m in ("01", "02"))
    rows = query(marts, "select claim_id, duplicate_type, original_claim_id, is_original, copy_count, file_ids "
                        "from analytics.duplicate_claims order by 1, 2")
    assert rows == [
        ("D1", "suspected_duplicate", "D1", True, 2, [january]),
        ("D2", "suspected_duplicate", "D1", False, 2, [january]),
        ("R1", "exact_resend", "R1", None, 2, [january, february]),
    ]  # A1 was sent again changed: an adjustment, not a duplicate
    assert query(marts, "select paid_amount from core.fct_claims where claim_id = 'A1'") == [(Decimal("60"),)]


def test_provider_claim_metrics_by_month_under_disclosure_control(marts):
    rows = {(npi, month): row for npi, month, *row in query(
        marts, "select rendering_npi, service_month, claim_count, member_count, denied_claim_count, billed_amount, "
               "allowed_amount, paid_amount, allowed_to_billed_ratio, paid_to_allowed_ratio, denial_rate, "
               "is_claim_count_suppressed from analytics.provider_claim_metrics")}
    claims = pd.DataFrame(BENFORD, columns=["claim_id", "member", "billed", "denied"])
    claims["allowed"] = (~claims.denied) * 800
    claims["paid"] = (~claims.denied) * 700
    billed, allowed, paid = (Decimal(int(claims[c].sum())) for c in ("billed", "allowed", "paid"))
    denied = int(claims.denied.sum())
    assert (len(claims), denied) == (300, 60)
    assert rows[("4000000001", date(2024, 1, 1))] == [
        published(300), published(300), published(denied), billed, allowed, paid,
        round(allowed / billed, 4), round(paid / allowed, 4), round(Decimal(published(denied)) / published(300), 4),
        False]
    # One claim: withheld, and nothing else about it shown.
    assert rows[("1000000012", date(2024, 1, 1))] == [None, None, None, None, None, None, None, None, None, True]


def test_readmissions_are_an_unadjusted_rate_per_provider_and_discharge_month(marts):
    rows = {(npi, month): row for npi, month, *row in query(
        marts, "select rendering_npi, discharge_month, index_stay_count, readmitted_stay_count, readmission_rate, "
               "is_follow_up_complete from analytics.readmissions_30d")}
    assert (date(2024, 1, 20) - INDEX_DISCHARGE).days == 14 and (date(2024, 2, 20) - INDEX_DISCHARGE).days == 45
    assert rows == {
        ("3000000001", date(2024, 1, 1)): [20, 10, Decimal("0.5000"), True],
        ("3000000002", date(2024, 1, 1)): [10, 0, Decimal("0.0000"), True],
        ("3000000002", date(2024, 2, 1)): [10, 0, Decimal("0.0000"), True],
        # One stay (withheld); its follow-up runs past the last day the claims reach (15 April).
        ("3000000009", date(2024, 4, 1)): [None, None, None, False],
    }


def test_the_investigators_doc_gives_every_rule_its_weight_and_every_threshold(marts):
    """docs/claims-anomaly-rules.md is what an investigator reads: it lists every rule with the weight dbt uses, and
    names every claims_* var."""
    repo = Path(__file__).resolve().parents[2]
    project_vars = yaml.safe_load((repo / "dbt" / "dbt_project.yml").read_text())["vars"]
    doc = (repo / "docs" / "claims-anomaly-rules.md").read_text()
    rows = {line.split("|")[1].strip(" `"): line.split("|")[-2].strip() for line in doc.splitlines()
            if line.startswith("| `")}
    assert rows == {rule: str(weight) for rule, weight in project_vars["claims_anomaly_weights"].items()}
    assert [name for name in project_vars if name.startswith("claims_") and f"`{name}`" not in doc] == []
    fired = {reason["rule_id"] for _, reasons in scores(marts).values() for reason in reasons}
    assert fired == set(rows)  # and the crafted claims fire every one of them
