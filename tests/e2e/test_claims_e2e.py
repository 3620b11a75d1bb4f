"""Payer claims, the whole slice (issue 15): files of all four claim layouts (BlueCross, Aetna, UnitedHealth, Tuva)
and both eligibility layouts (a payer's plain member file, Tuva's) in S3 -> `claims_ingest` under dag.test() ->
`claims_marts` under dag.test() (dbt, a task per model) -> the API.

Expected figures are worked out here from the files: Tuva's member months and PMPM with pandas
(tests/dbt/test_claims_marts.py's calculation), BlueCross's member months by hand; never read back from the warehouse.
Disclosure control is set to publish every count as it is (SDC_THRESHOLD=1), so the API's figures are the exact ones.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from tests.backend.claims_files import FILES
from tests.conftest import shared_data
from tests.dbt.test_claims_marts import expected_member_months, expected_pmpm

DAGS = Path(__file__).resolve().parents[2] / "airflow" / "dags"
TUVA_CLAIMS = "claims/provider=medicare/year=2018/month=12/medical_claim.csv"
TUVA_MEMBERS = "eligibility/provider=medicare/year=2018/month=12/eligibility.csv"
UNITEDHEALTH = "claims/provider=unitedhealth/year=2024/month=03/uhc_batch.csv"
UNITEDHEALTH_LINES = [
    "CLAIM_ID,SUBSCRIBER_ID,RENDERING_PROVIDER_NPI,RECEIVED_DT,SVC_FROM_DT,SVC_TO_DT,DIAG_CD,PROC_CD,BILLED_AMT,"
    "ALLOWED_AMT,PAID_AMT,CLM_STATUS,CLM_TYPE",
    "U1,S1,2000000001,20240305,20240301,20240301,J45.909,99213,150.00,120.00,100.00,Paid,Professional",
    "U2,S2,2000000001,20240310,20240302,20240302,E11.9,99214,220.00,0,0,Denied,Professional",
]


def _api(settings):
    from backend.app import create_app
    from backend.auth import create_key
    from backend.config import ApiSettings

    client = create_app(ApiSettings(database_url=settings.database_url, rate_limit="")).test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = "Bearer " + create_key(settings.database_url, "e2e claims", "clinician")
    return client


def _pages(client, path: str, **query) -> list[dict]:
    rows, cursor = [], None
    while True:
        body = client.get(path, query_string={**query, "limit": 500, **({"cursor": cursor} if cursor else {})}).get_json()
        rows += body["data"]
        cursor = body["meta"].get("next_cursor")
        if not cursor:
            return rows


@pytest.mark.e2e
def test_every_claims_and_eligibility_layout_reaches_the_marts_and_the_api(settings, store, db, airflow_home,
                                                                          monkeypatch):
    import pandas as pd

    tuva_claims = shared_data("claims_tuva", "medical_claim_seed.csv")
    tuva_members = shared_data("claims_tuva", "eligibility_seed.csv")
    store.put(TUVA_CLAIMS, tuva_claims.read_bytes())
    store.put(TUVA_MEMBERS, tuva_members.read_bytes())
    store.put(UNITEDHEALTH, ("\n".join(UNITEDHEALTH_LINES) + "\n").encode())
    for key, lines in FILES.items():  # BlueCross (two months), Aetna, BlueCross's plain member file
        store.put(key, ("\n".join(lines) + "\n").encode())
    for name, value in (("DATABASE_URL", settings.database_url), ("S3_ENDPOINT_URL", settings.s3_endpoint_url),
                        ("S3_BUCKET", settings.s3_bucket), ("SDC_THRESHOLD", "1"), ("SDC_ROUNDING_BASE", "1")):
        monkeypatch.setenv(name, value)
    from airflow.dag_processing.dagbag import DagBag

    from elt.config import get_settings

    get_settings.cache_clear()
    dags = DagBag(str(DAGS)).dags
    ingest = dags["claims_ingest"].test()
    assert ingest.state == "success"
    ledger = dict(db.execute("select key, status from ops.file_ledger").fetchall())
    assert ledger == {key: "loaded" for key in [TUVA_CLAIMS, TUVA_MEMBERS, UNITEDHEALTH, *FILES]}
    layouts = {layout for (layout,) in db.execute("select distinct layout from ops.file_ledger")}
    assert layouts == {"tuva", "bluecross", "aetna", "unitedhealth", "payer"}  # "payer": the plain member file
    marts = dags["claims_marts"].test()
    assert marts.state == "success", {ti.task_id: ti.state for ti in marts.get_task_instances() if ti.state != "success"}
    client = _api(settings)

    # Tuva: member months and PMPM from the CSVs (the seed's 96 lines paid above allowed are rejects, by the rule).
    claims = pd.read_csv(tuva_claims, dtype=str)
    paid, allowed = pd.to_numeric(claims["paid_amount"]), pd.to_numeric(claims["allowed_amount"])
    loaded = claims[~(paid > allowed)]
    member_months = expected_member_months(pd.read_csv(tuva_members, dtype=str))
    expected = expected_pmpm(loaded, member_months)
    served = _pages(client, "/api/v1/claims/pmpm", payer="medicare")
    assert {(r["payer"], r["plan"], r["month"], r["claim_type"], r["member_months"], r["claim_count"],
             Decimal(str(r["paid_amount"])), Decimal(str(r["allowed_amount"])),
             None if r["paid_pmpm"] is None else Decimal(str(r["paid_pmpm"])).quantize(Decimal("0.01")),
             None if r["allowed_pmpm"] is None else Decimal(str(r["allowed_pmpm"])).quantize(Decimal("0.01")))
            for r in served} == expected
    assert len(served) == len(expected) > 50

    # BlueCross's plain member file: January M1, M2 (from the 15th), M3; February M1, M2 (ppo), M5 (hmo); March M2.
    bluecross = {(r["plan"], r["month"]): r["member_months"]
                 for r in _pages(client, "/api/v1/claims/pmpm", payer="bluecross", claim_type="all")}
    assert bluecross == {("ppo", "2024-01-01"): 3, ("ppo", "2024-02-01"): 2, ("hmo", "2024-02-01"): 1,
                         ("ppo", "2024-03-01"): 1}

    # UnitedHealth's two claims, its dates and amounts read from its own spellings; the denied one counts as denied.
    metrics = _pages(client, "/api/v1/claims/provider-metrics", rendering_npi="2000000001")
    assert [(m["service_month"], m["claim_count"], m["denied_claim_count"], Decimal(str(m["billed_amount"])),
             Decimal(str(m["paid_amount"]))) for m in metrics] == [("2024-03-01", 2, 1, Decimal("370"), Decimal("100"))]

    # Every current claim is scored, of every payer; one member's lines are served to the clinician.
    scores = _pages(client, "/api/v1/claims/anomaly-scores")
    assert {s["payer"] for s in scores} == {"medicare", "bluecross", "aetna", "unitedhealth"}
    assert len(scores) == loaded["claim_id"].nunique() + 5 + 2 + 2
    lines = client.get("/api/v1/claims/lines", query_string={"payer": "unitedhealth", "member_id": "S1"}).get_json()
    assert [(line["claim_id"], line["procedure_code"]) for line in lines["data"]] == [("U1", "99213")]
    get_settings.cache_clear()
