"""Payer claims (issue 15 §4): the claims analytics marts (PMPM, provider metrics, cost outliers, 30-day
readmissions, the Benford first-digit test), the claim-level lists (duplicates; anomaly scores, highest first, with
the reasons that fired, and one claim's explanation) and one member's claim lines. Built by dbt from the payers'
claims and eligibility files (dbt/models/*/claims; docs/claims-anomaly-rules.md explains the anomaly rules).

Who reads what (docs/decisions/0026-claims-api.md): the aggregate marts are de-identified and under disclosure
control, so analysts read them; the claim-level marts list single claims (with an opaque member key), so clinicians
(proposal 0001); claim lines carry the payer's member id, personal data: clinicians, every read audited
(`patient_level`), and the member id is a required query parameter rather than a path value, because the access log
holds the path and never the query string (backend/serve.py).

Provenance: a resource's `sources` are the files of its drop types loaded before its build. PMPM reads claims and
eligibility (member months), its family's two drop types; every other resource here is built from claims alone, and
says so, so that an eligibility file is never listed as a source of a figure it did not touch.
"""

from __future__ import annotations

from dataclasses import replace

from backend.api.listing import Column, Resource

CLAIMS_ONLY = ("claims",)
PAYER = Column("payer", description="The payer (the provider= folder of its files).", filter="eq", sortable=True)
NPI = Column("rendering_npi", description="The rendering provider's NPI (Aetna: its tax id).", filter="eq",
             sortable=True)
# Not sortable in the claim-level marts: their indexes serve the payer's and the score's order, not the claim id's.
CLAIM_ID = Column("claim_id", description="The payer's claim id.", filter="eq")
CLAIM_TYPE = Column("claim_type", description="Claim type, lower case.", filter="eq")
CLAIM_STATUS = Column("claim_status", description="Claim status, lower case.", filter="eq")

PMPM = Resource(
    name="claims-pmpm",
    path="/claims/pmpm",
    table="analytics.claims_pmpm",
    summary="One row per payer, plan, month and claim type (and `all`): member months from eligibility, claims, paid "
            "and allowed amounts, and paid and allowed per member per month (no rate without member months).",
    columns=(
        PAYER,
        Column("plan", filter="eq"),
        Column("month", "date", "First day of the month.", filter="range", sortable=True),
        Column("claim_type", description="Claim type, lower case, or `all`.", filter="eq"),
        Column("member_months", "integer"),
        Column("claim_count", "integer"),
        Column("paid_amount", "number"),
        Column("allowed_amount", "number"),
        Column("paid_pmpm", "number"),
        Column("allowed_pmpm", "number"),
        Column("is_member_months_suppressed", "boolean"),
        Column("is_claim_count_suppressed", "boolean"),
    ),
    key=("payer", "plan", "month", "claim_type"),
    default_sort="month",
)  # built from claims and eligibility: its family's drop types

PROVIDER_METRICS = Resource(
    name="claims-provider-metrics",
    path="/claims/provider-metrics",
    table="analytics.provider_claim_metrics",
    summary="One row per rendering provider per month of service: claims, members, billed / allowed / paid, "
            "allowed-to-billed and paid-to-allowed ratios, denial rate.",
    columns=(
        NPI,
        Column("service_month", "date", "First day of the month of service.", filter="range", sortable=True),
        Column("claim_count", "integer"),
        Column("member_count", "integer"),
        Column("denied_claim_count", "integer"),
        Column("billed_amount", "number"),
        Column("allowed_amount", "number"),
        Column("paid_amount", "number"),
        Column("allowed_to_billed_ratio", "number"),
        Column("paid_to_allowed_ratio", "number"),
        Column("denial_rate", "number"),
        Column("is_claim_count_suppressed", "boolean"),
        Column("is_member_count_suppressed", "boolean"),
        Column("is_denied_claim_count_suppressed", "boolean"),
    ),
    key=("rendering_npi", "service_month"),
    default_sort="service_month",
    drop_types=CLAIMS_ONLY,
)

COST_OUTLIERS = Resource(
    name="claims-provider-cost-outliers",
    path="/claims/provider-cost-outliers",
    table="analytics.provider_cost_outliers",
    summary="One row per rendering provider and procedure: allowed cost per claim against the peers billing the "
            "procedure (median, MAD, robust z-score, percentile); no verdict below the minimum peer count.",
    columns=(
        NPI,
        Column("procedure_code", description="CPT or HCPCS procedure code.", filter="eq", sortable=True),
        Column("claim_count", "integer"),
        Column("allowed_per_claim", "number"),
        Column("peer_provider_count", "integer"),
        Column("has_verdict", "boolean", filter="eq"),
        Column("peer_median_allowed_per_claim", "number"),
        Column("peer_mad", "number"),
        Column("spread_method"),
        Column("robust_z", "number"),
        Column("cost_percentile", "number"),
        Column("is_high_cost_outlier", "boolean", filter="eq"),
        Column("is_claim_count_suppressed", "boolean"),
    ),
    key=("rendering_npi", "procedure_code"),
    default_sort="procedure_code",
    drop_types=CLAIMS_ONLY,
)

READMISSIONS = Resource(
    name="claims-readmissions",
    path="/claims/readmissions",
    table="analytics.readmissions_30d",
    summary="One row per rendering provider of the index stay per month of discharge: the UNADJUSTED all-cause "
            "30-day readmission rate (not the CMS methodology).",
    columns=(
        NPI,
        Column("discharge_month", "date", "First day of the month the index stays ended.", filter="range",
               sortable=True),
        Column("index_stay_count", "integer"),
        Column("readmitted_stay_count", "integer"),
        Column("readmission_rate", "number"),
        Column("is_follow_up_complete", "boolean", filter="eq"),
        Column("is_index_stay_count_suppressed", "boolean"),
        Column("is_readmitted_stay_count_suppressed", "boolean"),
    ),
    key=("rendering_npi", "discharge_month"),
    default_sort="discharge_month",
    drop_types=CLAIMS_ONLY,
)

BENFORD = Resource(
    name="claims-provider-benford",
    path="/claims/provider-benford",
    table="analytics.provider_benford",
    summary="One row per rendering provider: the first-digit (Benford) test of its billed amounts, the mean absolute "
            "deviation from Benford's shares and Nigrini's conformity band; no verdict below the minimum claims.",
    columns=(
        NPI,
        Column("claim_count", "integer"),
        Column("has_verdict", "boolean", filter="eq"),
        Column("first_digit_mad", "number"),
        Column("conformity", filter="eq", choices=("close", "acceptable", "marginal", "nonconformity")),
        Column("is_nonconforming", "boolean", filter="eq"),
        Column("is_claim_count_suppressed", "boolean"),
    ),
    key=("rendering_npi",),
    default_sort="rendering_npi",
    drop_types=CLAIMS_ONLY,
)

DUPLICATES = Resource(
    name="claims-duplicates",
    path="/claims/duplicates",
    table="analytics.duplicate_claims",
    summary="One row per current claim and kind of duplicate: exact re-sends (the same content in several files) and "
            "suspected duplicates (same member, provider, day of service and procedure under other claim ids).",
    columns=(
        PAYER,
        CLAIM_ID,
        Column("duplicate_type", filter="eq", choices=("exact_resend", "suspected_duplicate")),
        Column("member_key", description="Opaque member key.", filter="eq"),
        replace(NPI, sortable=False),
        Column("service_from_date", "date", filter="range"),
        Column("procedure_code", filter="eq"),
        Column("original_claim_id", filter="eq"),
        Column("is_original", "boolean", filter="eq"),
        Column("copy_count", "integer"),
        Column("file_ids", "integer[]", "The files behind the row (ledger ids, `elt files`)."),
    ),
    key=("payer", "claim_id", "duplicate_type"),
    default_sort="payer",
    role="clinician",
    drop_types=CLAIMS_ONLY,
)

ANOMALY_SCORES = Resource(
    name="claims-anomaly-scores",
    path="/claims/anomaly-scores",
    table="analytics.claim_anomaly_scores",
    summary="One row per current claim, highest anomaly score first: the score (0 to 1, the sum of the weights of "
            "the rules that fired) and the reasons, each with its rule id, the claim's statistic and the peer value "
            "(docs/claims-anomaly-rules.md). `anomaly_score_from=0.01` lists only the claims a rule fired on.",
    columns=(
        PAYER,
        CLAIM_ID,
        Column("member_key", description="Opaque member key.", filter="eq"),
        replace(NPI, sortable=False),
        CLAIM_TYPE,
        CLAIM_STATUS,
        Column("claim_date", "date", "When the payer received the claim.", filter="range"),
        Column("service_from_date", "date", "First day of service."),
        Column("procedure_code", filter="eq"),
        Column("billed_amount", "number"),
        Column("allowed_amount", "number"),
        Column("paid_amount", "number"),
        Column("reporting_month", "date", "The month of the file holding the claim's current version: the claim "
                                          "is scored against its peers as of this month.", filter="range"),
        Column("anomaly_score", "number", filter="range", sortable=True),
        Column("reason_count", "integer"),
        Column("reasons", "json", "The rules that fired, in rule order: [{rule_id, statistic, peer_value, weight, "
                                  "...}]; [] when none did."),
        Column("rule_ids", "text[]", "The rule ids of reasons, in the same order."),
    ),
    key=("payer", "claim_id"),
    default_sort="-anomaly_score",
    role="clinician",
    drop_types=CLAIMS_ONLY,
)


def _from_path(column: Column) -> Column:
    """A key column carried by the path: compared exactly; too long is a 400 (a cut id could name another claim)."""
    return replace(column, filter=None, sortable=False, max_length=100, path_overflow="refuse")


# One claim's explanation: its score and reasons (the anomaly list's row), 404 when the payer has no such claim.
ANOMALY_EXPLANATION = replace(
    ANOMALY_SCORES,
    name="claims-anomaly-explanation",
    path="/claims/anomaly-scores/{payer}/{claim_id}",
    summary="One claim's anomaly score and the reasons that fired (rule id, the claim's statistic, the peer value, "
            "the weight), as docs/claims-anomaly-rules.md explains them; 404 when the payer has no such claim.",
    columns=tuple(_from_path(c) if c.name in ("payer", "claim_id") else replace(c, filter=None)
                  for c in ANOMALY_SCORES.columns),
    single_row=True,
)

# One member's claim lines (the payer's member id: personal data, so a required query parameter, out of the access
# log), the current version of each claim, by claim and line.
CLAIM_LINES = Resource(
    name="claims-lines",
    path="/claims/lines",
    table="core.fct_claim_lines",
    summary="One member's claim lines (payer and member_id required): the current version of each claim, line by "
            "line, with the file and row each came from.",
    columns=(
        replace(PAYER, required=True),
        Column("member_id", description="The payer's member id (personal data).", filter="eq", required=True),
        replace(CLAIM_ID, sortable=True),  # one member's lines: few rows to sort
        Column("claim_line_number", "integer"),
        Column("rendering_npi"),
        Column("billing_npi"),
        CLAIM_TYPE,
        CLAIM_STATUS,
        Column("claim_date", "date"),
        Column("service_from_date", "date", filter="range"),
        Column("service_to_date", "date"),
        Column("admit_date", "date"),
        Column("discharge_date", "date"),
        Column("diagnosis_codes", "text[]"),
        Column("procedure_code"),
        Column("units", "number"),
        Column("billed_amount", "number"),
        Column("allowed_amount", "number"),
        Column("paid_amount", "number"),
        Column("file_id", "integer"),
        Column("source_row_number", "integer"),
    ),
    key=("payer", "claim_id", "claim_line_number"),
    default_sort="payer",
    role="clinician",
    patient_level=True,
    drop_types=CLAIMS_ONLY,
)

# What the claims family's API serves from this module, under its prefix /claims (backend/api/catalogue.py).
RESOURCES = (PMPM, PROVIDER_METRICS, COST_OUTLIERS, READMISSIONS, BENFORD, DUPLICATES, ANOMALY_SCORES,
             ANOMALY_EXPLANATION, CLAIM_LINES)

# Said when a mart behind the API is not built yet (backend/errors.py).
NOT_BUILT_HINT = "for the claims marts, load a payer's claims and eligibility files and build the claims models"
