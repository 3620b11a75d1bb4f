"""Claim anomalies: the claims a rule fired on, highest score first, with the reasons for each (the rule, the claim's
figure and its peers': docs/claims-anomaly-rules.md). Single claims: clinicians and admins only, as the API says."""

from __future__ import annotations

import streamlit as st

from backend.dashboard import ui

view, context = ui.start(__file__)
(SCORES,) = view.reads


def reasons_text(reasons: list[dict]) -> str:
    return "; ".join(f"{r.get('rule_id')}: {r.get('statistic')} against peers' {r.get('peer_value')}"
                     for r in reasons or [])


flagged = ui.fetch(context, SCORES, {"anomaly_score_from": 0.01}, quiet=True)  # the payers with a flagged claim
payers = sorted({r["payer"] for r in (flagged.rows if flagged else [])})
payer = ui.choice(context, SCORES, "payer", "Payer", options=payers)
lowest = st.slider("Lowest score shown", 0.01, 1.0, 0.01, key="lowest_score")
scores = ui.fetch(context, SCORES, {"payer": payer, "anomaly_score_from": lowest})
if scores:
    data = ui.frame(scores)
    data["why"] = data["reasons"].map(reasons_text)
    ui.table(data[["payer", "claim_id", "claim_type", "claim_date", "procedure_code", "paid_amount",
                       "anomaly_score", "reason_count", "why"]], "anomalies")
