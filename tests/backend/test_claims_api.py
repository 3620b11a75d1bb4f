"""/api/v1/claims/... (backend/api/claims.py) on marts built by real dbt from hand-made payer files that the real loader
took from the S3 endpoint, served by the app of the repository's families (the claims declaration is
elt/families/claims.yml), queried with real keys.

The files: BlueCross claims for January (C1 to C4: C3 bills C1's service again under another id, C4 was received
before its service ended) and February (C2 sent again unchanged, C5), Aetna inpatient stays of a member with no
eligibility (one readmission), and BlueCross's member file (M1, M2, M3 on plan ppo, M5 on hmo). The figures the API
must serve (PMPM, scores, reasons) are worked out by hand below; the other lists are compared with the marts read with
SQL written here. Disclosure control is off (threshold 1, base 1), so that every figure is exact.
"""

from __future__ import annotations

import csv
import io
import json
import uuid
from datetime import date
from decimal import Decimal

import psycopg
import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as examples
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from backend.api.claims import BENFORD, COST_OUTLIERS, PROVIDER_METRICS, READMISSIONS, RESOURCES
from backend.app import create_app
from backend.auth import create_key
from elt.config import Settings
from elt.families import declared_families
from elt.pipeline import ingest_file
from elt.transform import run_dbt
from tests.backend.claims_files import FILES
from tests.backend.conftest import api_settings
from tests.conftest import create_database, drop_database

FUZZ_CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
CLAIMS_MODELS = declared_families(Settings())["claims"].dbt_select()  # its folders and the shared ledger view

# claims_pmpm by hand. Member months: January M1, M2 (from the 15th), M3 on ppo = 3; February M1, M2 on ppo = 2 and
# M5 on hmo = 1; March M2 = 1. BlueCross January (ppo, professional): C1 80/90 + C2 120/150 + C3 80/90 + C4 200/250 =
# paid 480, allowed 580: 160.00 and 193.33 per member month. February: C5 60/80 over 2 = 30.00 and 40.00. Enrolled
# months without claims have their 'all' row at 0. Aetna's member has no eligibility: 'not enrolled', 0 member months
# and no rate: S1 900/1000 + S2 700/800 = 1600/1800.
PMPM = {  # (payer, plan, month, claim_type): (member_months, claim_count, paid, allowed, paid_pmpm, allowed_pmpm)
    **{("bluecross", "ppo", "2024-01-01", t): (3, 4, "480", "580", "160.00", "193.33") for t in ("professional", "all")},
    **{("bluecross", "ppo", "2024-02-01", t): (2, 1, "60", "80", "30.00", "40.00") for t in ("professional", "all")},
    ("bluecross", "hmo", "2024-02-01", "all"): (1, 0, "0", "0", "0.00", "0.00"),
    ("bluecross", "ppo", "2024-03-01", "all"): (1, 0, "0", "0", "0.00", "0.00"),
    **{("aetna", "not enrolled", "2024-01-01", t): (0, 2, "1600", "1800", None, None) for t in ("inpatient", "all")},
}
# The claims a rule fires on (docs/claims-anomaly-rules.md, default weights); every other claim scores 0.
C3_REASONS = [{"rule_id": "duplicate", "statistic": 2, "peer_value": 1, "weight": 0.4, "original_claim_id": "C1"}]
C4_REASONS = [{"rule_id": "service_after_received", "statistic": 3, "peer_value": 0, "weight": 0.3}]
ALL_CLAIMS = [("aetna", "S1"), ("aetna", "S2"), *(("bluecross", f"C{n}") for n in range(1, 6))]
PATHS = ["/api/v1/claims/pmpm", "/api/v1/claims/provider-metrics", "/api/v1/claims/provider-cost-outliers",
         "/api/v1/claims/readmissions", "/api/v1/claims/provider-benford", "/api/v1/claims/duplicates",
         "/api/v1/claims/anomaly-scores", "/api/v1/claims/anomaly-scores/{payer}/{claim_id}", "/api/v1/claims/lines"]


@pytest.fixture(scope="module")
def claims(pg_server_url, s3_endpoint_url, warehouse_template, login_passwords, dbt_manifest, tmp_path_factory):
    """(settings, app, keys): the files loaded in order through the loader, the claims models built and tested by
    dbt, and the API of a family folder with claims in it."""
    import boto3

    from elt.config import Settings
    from elt.storage.s3 import ObjectStore

    suffix = uuid.uuid4().hex[:10]
    database = f"hw_claims_api_{suffix}"
    url = create_database(pg_server_url, database, template=warehouse_template)
    bucket = f"claims-api-{suffix}"
    boto3.client("s3", endpoint_url=s3_endpoint_url, region_name="us-east-1").create_bucket(Bucket=bucket)
    settings = Settings(database_url=url, s3_endpoint_url=s3_endpoint_url, s3_bucket=bucket, sdc_threshold=1,
                        sdc_rounding_base=1)
    store = ObjectStore(settings)
    for key, lines in FILES.items():
        store.put(key, ("\n".join(lines) + "\n").encode())
        outcome = ingest_file(key, settings=settings)
        assert (outcome.status, outcome.rows_rejected) == ("loaded", 0), (key, outcome.error)
    run_dbt(["build", "--select", *CLAIMS_MODELS, "--target-path", str(tmp_path_factory.mktemp("claims_target"))],
            settings=settings)
    app = create_app(api_settings(url, login_passwords, max_page_size=50, default_page_size=20, rate_limit="",
                                  auth_failure_limit=""), elt_settings=settings)
    keys = {role: create_key(url, f"claims {role}", role) for role in ("analyst", "clinician", "admin")}
    yield settings, app, keys
    drop_database(pg_server_url, database)


@pytest.fixture
def call(claims):
    _, app, keys = claims
    client = app.test_client()

    def get(path: str, role: str = "analyst", **kwargs):
        return client.get(path, headers={"Authorization": f"Bearer {keys[role]}", **kwargs.pop("headers", {})},
                          **kwargs)

    return get


def query(settings, statement: str, params: tuple = ()) -> list[tuple]:
    with psycopg.connect(settings.database_url) as conn:
        return conn.execute(statement, params).fetchall()


def file_ids(settings, *prefixes: str) -> list[int]:
    return [file_id for (file_id,) in query(settings, "select file_id from ops.file_ledger where status = 'loaded' and "
                                                      "split_part(key, '/', 1) = any(%s) order by 1", (list(prefixes),))]


def walk(call, path: str, role: str = "analyst", **params) -> tuple[list[dict], list[dict]]:
    rows, metas, cursor = [], [], None
    while True:
        body = call(path, role, query_string={**params, **({"cursor": cursor} if cursor else {})}).get_json()
        assert "data" in body, body
        rows += body["data"]
        metas.append(body["meta"])
        cursor = body["meta"]["next_cursor"]
        if cursor is None:
            return rows, metas


def number(value) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def test_pmpm_is_the_hand_computation_with_claims_and_eligibility_as_its_sources(claims, call):
    settings, _, _ = claims
    rows, metas = walk(call, "/api/v1/claims/pmpm", limit=3)

    served = {(r["payer"], r["plan"], r["month"], r["claim_type"]): (
        r["member_months"], r["claim_count"], number(r["paid_amount"]), number(r["allowed_amount"]),
        number(r["paid_pmpm"]), number(r["allowed_pmpm"])) for r in rows}
    assert served == {group: (months, count, Decimal(paid), Decimal(allowed), number(paid_pmpm), number(allowed_pmpm))
                      for group, (months, count, paid, allowed, paid_pmpm, allowed_pmpm) in PMPM.items()}
    assert len(rows) == len(PMPM) and [r["month"] for r in rows] == sorted(r["month"] for r in rows)
    # Built from claims and eligibility: both drop types' files are its sources; the claim-only marts name claims'.
    eligibility, claim_files = file_ids(settings, "eligibility"), file_ids(settings, "claims")
    assert len(eligibility) == 1 and len(claim_files) == 3
    assert metas[0]["sources"] == sorted(eligibility + claim_files)
    assert metas[0]["as_of"] == query(settings, "select max(built_at) from analytics.claims_pmpm")[0][0].isoformat()
    assert call("/api/v1/claims/provider-metrics").get_json()["meta"]["sources"] == claim_files


def test_pmpm_filters_by_payer_plan_and_month(call):
    body = call("/api/v1/claims/pmpm", query_string={"payer": "BlueCross", "month_from": "2024-02-01",
                                                     "plan": "ppo"}).get_json()
    assert [(r["month"], r["claim_type"], r["paid_pmpm"]) for r in body["data"]] == [
        ("2024-02-01", "all", 30.0), ("2024-02-01", "professional", 30.0), ("2024-03-01", "all", 0.0)]


def plain(value):
    """A value as JSON gives it back, for comparing a served row with the mart's: numbers as floats, dates as text."""
    if isinstance(value, int | float | Decimal) and not isinstance(value, bool):
        return float(value)
    return value.isoformat() if isinstance(value, date) else value


@pytest.mark.parametrize("resource", [PROVIDER_METRICS, COST_OUTLIERS, READMISSIONS, BENFORD], ids=lambda r: r.name)
def test_each_provider_mart_is_served_whole_to_an_analyst(claims, call, resource):
    settings, _, _ = claims
    rows, _ = walk(call, "/api/v1" + resource.path, limit=2)
    names = [c.name for c in resource.columns]
    expected = query(settings, f"select {', '.join(names)} from {resource.table}")  # noqa: S608 - declared names

    def keyed(row: dict) -> tuple:
        return tuple(row[k] for k in resource.key)

    assert {keyed(r): {k: plain(v) for k, v in r.items()} for r in rows} == {
        keyed(r): r for r in ({k: plain(v) for k, v in zip(names, row, strict=True)} for row in expected)}
    assert len(rows) == len(expected) > 0


def test_readmissions_count_the_hand_made_stay(call):
    rows = call("/api/v1/claims/readmissions", query_string={"rendering_npi": "3000000001"}).get_json()["data"]
    assert [(r["discharge_month"], r["index_stay_count"], r["readmitted_stay_count"], r["readmission_rate"])
            for r in rows] == [("2024-01-01", 1, 1, 1.0)]


def test_anomalies_come_highest_score_first_with_their_reasons_as_json(call):
    rows, metas = walk(call, "/api/v1/claims/anomaly-scores", "clinician", limit=2)

    assert [(r["payer"], r["claim_id"], r["anomaly_score"]) for r in rows] == [
        ("bluecross", "C3", 0.4), ("bluecross", "C4", 0.3),
        # the rest score 0, the key breaking the tie in the same (descending) direction
        *((payer, claim_id, 0.0) for payer, claim_id in sorted(set(ALL_CLAIMS) - {("bluecross", "C3"),
                                                                                  ("bluecross", "C4")}, reverse=True))]
    assert len(metas) == 4 and metas[0]["total"] == 7
    by_claim = {r["claim_id"]: r for r in rows}
    assert by_claim["C3"]["reasons"] == C3_REASONS and by_claim["C3"]["rule_ids"] == ["duplicate"]
    assert by_claim["C4"]["reasons"] == C4_REASONS and by_claim["C4"]["reason_count"] == 1
    assert by_claim["C1"]["reasons"] == [] and by_claim["C1"]["rule_ids"] == []  # the original of the pair

    flagged = call("/api/v1/claims/anomaly-scores", "clinician", query_string={"anomaly_score_from": "0.01"})
    assert [r["claim_id"] for r in flagged.get_json()["data"]] == ["C3", "C4"]
    ascending = call("/api/v1/claims/anomaly-scores", "clinician", query_string={"sort": "anomaly_score", "limit": 50})
    assert [r["claim_id"] for r in ascending.get_json()["data"]][-2:] == ["C4", "C3"]


def test_one_claims_explanation_and_a_claim_it_does_not_know(call):
    body = call("/api/v1/claims/anomaly-scores/bluecross/C4", "clinician").get_json()
    assert [(r["claim_id"], r["anomaly_score"], r["reasons"]) for r in body["data"]] == [("C4", 0.3, C4_REASONS)]
    assert body["meta"]["total"] == 1
    assert call("/api/v1/claims/anomaly-scores/bluecross/C1", "clinician").get_json()["data"][0]["reasons"] == []

    for path in ("/api/v1/claims/anomaly-scores/bluecross/NOSUCH9", "/api/v1/claims/anomaly-scores/aetna/C4",
                 "/api/v1/claims/anomaly-scores/bluecross/c4"):  # ids compare exactly
        for extra in ({}, {"query_string": {"format": "csv"}}):
            response = call(path, "clinician", **extra)
            assert response.status_code == 404, path
            error = response.get_json()["error"]
            assert error["code"] == "not_found" and "NOSUCH9" not in error["message"] and "C4" not in error["message"]


@pytest.mark.parametrize(("value", "status"), [("Q" * 101, 400), ("zq%00zq", 400), ("Q" * 100, 404)])
def test_a_bad_claim_id_in_the_path_is_refused_without_being_echoed(call, value, status):
    response = call(f"/api/v1/claims/anomaly-scores/bluecross/{value}", "clinician")
    assert response.status_code == status
    error = response.get_json()["error"]
    assert "QQQ" not in error["message"] and "zq" not in error["message"]
    if status == 400:
        assert error["code"] == "invalid_parameter" and error["message"].startswith("claim_id:")
    # who may ask comes first: an analyst learns nothing about the value
    assert call(f"/api/v1/claims/anomaly-scores/bluecross/{value}", "analyst").status_code == 403


def test_bad_query_values_are_refused_without_being_echoed(call):
    for params in ({"payer": "x" * 201}, {"month_from": "not-a-month-7"}, {"sort": "-paid_pmpm"}):
        response = call("/api/v1/claims/pmpm", query_string=params)
        assert response.status_code == 400, params
        message = response.get_json()["error"]["message"]
        assert "xxxx" not in message and "not-a-month-7" not in message


def test_claim_lines_are_one_members_for_clinicians_only_and_every_read_is_audited(claims, call):
    settings, _, keys = claims
    key_id = int(keys["clinician"].split("_")[1])
    before = query(settings, "select coalesce(max(audit_id), 0) from ops.api_audit")[0][0]
    member = {"payer": "bluecross", "member_id": "M1"}

    refused = call("/api/v1/claims/lines", "analyst", query_string=member)
    assert refused.status_code == 403 and "clinician" in refused.get_json()["error"]["message"]
    for role in ("analyst", "clinician"):  # claim-level, though de-identified
        assert call("/api/v1/claims/anomaly-scores", role).status_code == (403 if role == "analyst" else 200)
        assert call("/api/v1/claims/duplicates", role).status_code == (403 if role == "analyst" else 200)
    assert query(settings, "select count(*) from ops.api_audit where audit_id > %s", (before,)) == [(0,)]

    body = call("/api/v1/claims/lines", "clinician", query_string=member).get_json()
    assert [(r["claim_id"], r["claim_line_number"], r["member_id"], r["procedure_code"], r["paid_amount"],
             r["diagnosis_codes"]) for r in body["data"]] == [
        ("C1", 1, "M1", "99213", 80, ["E11.9"]), ("C3", 1, "M1", "99213", 80, ["E11.9"])]
    jan = file_ids(settings, "claims")[0]
    assert {r["file_id"] for r in body["data"]} == {jan} and [r["source_row_number"] for r in body["data"]] == [1, 3]
    download = call("/api/v1/claims/lines", "clinician", query_string={**member, "format": "csv"})
    assert download.status_code == 200 and len(list(csv.DictReader(io.StringIO(download.text)))) == 2
    assert download.headers["Cache-Control"] == "no-store"
    assert query(settings, "select key_id, role, endpoint, params from ops.api_audit where audit_id > %s "
                           "order by audit_id", (before,)) == [
        (key_id, "clinician", "/api/v1/claims/lines", {"payer": ["bluecross"], "member_id": ["M1"]}),
        (key_id, "clinician", "/api/v1/claims/lines", {"payer": ["bluecross"], "member_id": ["M1"], "format": ["csv"]})]


def test_claim_lines_need_the_payer_and_the_member(call):
    for params in ({"payer": "bluecross"}, {"member_id": "M1"}, {"payer": "bluecross", "member_id": ""}):
        response = call("/api/v1/claims/lines", "clinician", query_string=params)
        assert response.status_code == 400, params
        error = response.get_json()["error"]
        assert error["code"] == "invalid_parameter" and "required" in error["message"].lower()
        assert "M1" not in error["message"]


def test_duplicates_list_the_re_send_and_the_suspected_pair(claims, call):
    settings, _, _ = claims
    rows, _ = walk(call, "/api/v1/claims/duplicates", "clinician")
    assert [(r["claim_id"], r["duplicate_type"], r["original_claim_id"], r["is_original"], r["copy_count"])
            for r in rows] == [("C1", "suspected_duplicate", "C1", True, 2), ("C2", "exact_resend", "C2", None, 2),
                               ("C3", "suspected_duplicate", "C1", False, 2)]
    january, february = (file_ids(settings, "claims")[i] for i in (0, 2))
    assert rows[1]["file_ids"] == [january, february]


def test_a_claims_mart_downloads_as_csv_with_its_provenance(claims, call):
    settings, _, _ = claims
    page = call("/api/v1/claims/pmpm", query_string={"limit": 50}).get_json()
    download = call("/api/v1/claims/pmpm", headers={"Accept": "text/csv"})
    assert download.status_code == 200 and download.mimetype == "text/csv"
    assert download.headers["Content-Disposition"] == 'attachment; filename="claims-pmpm.csv"'
    assert download.headers["X-Sources"] == ",".join(map(str, page["meta"]["sources"]))
    assert download.headers["X-Total-Count"] == str(len(PMPM))
    rows = list(csv.DictReader(io.StringIO(download.text)))
    assert [(r["payer"], r["plan"], r["month"], r["claim_type"], r["paid_pmpm"] or None) for r in rows] == [
        (r["payer"], r["plan"], r["month"], r["claim_type"], None if r["paid_pmpm"] is None else
         str(PMPM[r["payer"], r["plan"], r["month"], r["claim_type"]][4])) for r in page["data"]]

    anomalies = call("/api/v1/claims/anomaly-scores", "clinician", query_string={"format": "csv", "limit": 2})
    cells = list(csv.DictReader(io.StringIO(anomalies.text)))
    assert [(c["claim_id"], json.loads(c["reasons"]), c["rule_ids"]) for c in cells] == [
        ("C3", C3_REASONS, "duplicate"), ("C4", C4_REASONS, "service_after_received")]
    duplicates = list(csv.DictReader(io.StringIO(call("/api/v1/claims/duplicates", "clinician",
                                                      query_string={"format": "csv"}).text)))
    january, february = (file_ids(settings, "claims")[i] for i in (0, 2))
    assert [c["file_ids"] for c in duplicates if c["claim_id"] == "C2"] == [f"{january};{february}"]


def test_openapi_lists_every_claims_path(call):
    spec = call("/openapi.json").get_json()
    assert sorted(p for p in spec["paths"] if p.startswith("/api/v1/claims")) == sorted(PATHS)
    explanation = spec["paths"]["/api/v1/claims/anomaly-scores/{payer}/{claim_id}"]["get"]
    assert "404" in explanation["responses"]
    assert [(p["name"], p["schema"]["maxLength"]) for p in explanation["parameters"] if p["in"] == "path"] == [
        ("payer", 100), ("claim_id", 100)]
    lines = {p["name"]: p for p in spec["paths"]["/api/v1/claims/lines"]["get"]["parameters"]}
    assert lines["member_id"]["required"] is True and lines["payer"]["required"] is True
    assert lines["claim_id"]["required"] is False
    row = spec["components"]["schemas"]["ClaimsAnomalyScoresRow"]["properties"]
    assert "type" not in row["reasons"] and row["rule_ids"]["items"] == {"type": "string"}
    assert spec["components"]["schemas"]["ClaimsDuplicatesRow"]["properties"]["file_ids"]["items"] == {"type": "integer"}
    assert "404" not in spec["paths"]["/api/v1/claims/pmpm"]["get"]["responses"]


def test_every_claims_mart_reads_its_as_of_and_its_default_page_by_index(claims):
    """As tests/backend/test_mart_indexes.py checks the served marts, here for the claims marts (not in the repository's
    families yet); and one member's lines are found by index."""
    settings, _, _ = claims
    for resource in RESOURCES:
        indexes = index_columns_of(settings, resource.table)
        order = [resource.default_sort.lstrip("-"), *(k for k in resource.key if k != resource.default_sort.lstrip("-"))]
        assert any(columns[:1] == ["built_at"] for columns in indexes), resource.table
        assert any(columns[:len(order)] == order for columns in indexes), (resource.name, order)
    assert ["member_id"] in index_columns_of(settings, "core.fct_claim_lines")


def index_columns_of(settings, table: str) -> list[list[str]]:
    return [row[0] for row in query(
        settings, "select array(select attribute.attname from unnest(ix.indkey) with ordinality as k(attnum, position) "
                  "join pg_attribute as attribute on attribute.attrelid = ix.indrelid and attribute.attnum = k.attnum "
                  "order by k.position) from pg_index as ix where ix.indrelid = %s::regclass", (table,))]


@pytest.mark.parametrize("mode", list(GenerationMode), ids=lambda mode: mode.value)
@pytest.mark.parametrize("path", PATHS)
def test_no_generated_request_breaks_a_claims_endpoint_or_its_schema(claims, path, mode):
    """tests/backend/test_fuzz.py's schemathesis run, over the claims paths of this app."""
    _, app, keys = claims
    operation = schemathesis.openapi.from_wsgi("/openapi.json", app)[path]["GET"]
    statuses = []

    @given(case=operation.as_strategy(generation_mode=mode))
    @examples(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def run(case):
        statuses.append(case.call_and_validate(headers={"Authorization": f"Bearer {keys['admin']}"},
                                               checks=FUZZ_CHECKS).status_code)

    run()
    # A generated claim id names no claim: 404 is the valid answer there.
    answered = {200, 404} if "{claim_id}" in path else {200}
    assert (answered & set(statuses)) if mode is GenerationMode.POSITIVE else (400 in statuses)


def test_ready_checks_every_claims_mart(call):
    marts = call("/ready").get_json()["marts"]
    claims_marts = {"analytics.claims_pmpm", "analytics.provider_claim_metrics", "analytics.provider_cost_outliers",
                    "analytics.readmissions_30d", "analytics.provider_benford", "analytics.duplicate_claims",
                    "analytics.claim_anomaly_scores", "core.fct_claim_lines"}
    assert claims_marts <= set(marts)
    assert all(marts[mart]["built"] and marts[mart]["has_rows"] for mart in claims_marts)
