"""Claims (payers' claims and eligibility): paid and allowed per member per month by payer and month, provider
metrics, and the providers whose cost per claim stands out from their peers'. De-identified, under disclosure control:
the analyst role reads them. The claim-level anomaly list is its own page (clinicians)."""

from __future__ import annotations

import streamlit as st

from backend.dashboard import ui

view, context = ui.start(__file__)
PMPM, PROVIDERS, OUTLIERS = view.reads

known = ui.fetch(context, PMPM, {}, quiet=True)  # the payers and claim types there are, for the filters
payers = sorted({r["payer"] for r in (known.rows if known else [])})
claim_types = sorted({r["claim_type"] for r in (known.rows if known else [])})
left, right = st.columns(2)
with left:
    payer = ui.choice(context, PMPM, "payer", "Payer", options=payers)
with right:
    claim_type = ui.choice(context, PMPM, "claim_type", "Claim type", options=claim_types, default="all",
                           everything=False) if claim_types else None

st.subheader("Paid per member per month")
pmpm = ui.fetch(context, PMPM, {"payer": payer, "claim_type": claim_type})
if pmpm is None:
    st.stop()  # not built, or nothing for these filters: said once, not once per section
data = ui.frame(pmpm)
data["series"] = data["payer"] + " " + data["plan"]
ui.line_chart(data, "month", "paid_pmpm", color="series", y_format="$,.2f")
ui.table(data[["payer", "plan", "month", "claim_type", "member_months", "claim_count", "paid_amount",
                   "allowed_amount", "paid_pmpm", "allowed_pmpm"]], "pmpm")

st.subheader("Provider metrics")
providers = ui.fetch(context, PROVIDERS, {})
if providers:
    ui.table(ui.frame(providers)[["rendering_npi", "service_month", "claim_count", "member_count",
                                      "billed_amount", "allowed_amount", "paid_amount", "denial_rate"]], "providers")

st.subheader("Cost outliers")
only_outliers = st.toggle("Only the high-cost outliers", value=True, key="only_outliers")
outliers = ui.fetch(context, OUTLIERS, {"is_high_cost_outlier": "true" if only_outliers else None})
if outliers:
    ui.table(ui.frame(outliers)[["rendering_npi", "procedure_code", "claim_count", "allowed_per_claim",
                                     "peer_median_allowed_per_claim", "robust_z", "cost_percentile",
                                     "is_high_cost_outlier"]], "outliers")
