"""Clinics (Medilink): one facility's daily triage volume with its 7-day moving average and week-over-week change, its
priority mix, conditions by state and age band, and every facility's performance. Counts from 1 to 9 are withheld by
the marts (disclosure control): they show as gaps, never as guesses."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from backend.dashboard import ui

view, context = ui.start(__file__)
FACILITIES, TRENDS, CONDITIONS = view.reads
PRIORITIES = {"critical_count": "Critical", "high_count": "High", "medium_count": "Medium", "low_count": "Low"}

everywhere = ui.fetch(context, FACILITIES, {}, quiet=True)
states = sorted({f["state"] for f in (everywhere.rows if everywhere else [])})
left, right = st.columns(2)
with left:
    state = ui.choice(context, FACILITIES, "state", "State", options=states)

st.subheader("Facility performance")
facilities = ui.fetch(context, FACILITIES, {"state": state})
if facilities is None:
    st.stop()  # not built, or no facility in the state: said once, not once per section
table = ui.frame(facilities).sort_values(["triage_visit_count", "facility_name"], ascending=[False, True],
                                         na_position="last")
ui.table(table[["facility_id", "facility_name", "state", "lga", "facility_type", "patient_count",
                    "triage_visit_count", "urgent_visit_count", "avg_triage_level", "avg_daily_visits",
                    "volume_band"]], "facilities")
busiest_first = list(table["facility_id"])
names = dict(zip(table["facility_id"], table["facility_name"], strict=True))
with right:
    facility_id = ui.choice(context, TRENDS, "facility_id", "Facility", options=busiest_first, labels=names,
                            everything=False)

st.subheader(f"Daily triage volume: {names.get(facility_id, '')}")
days = ui.date_range(context, TRENDS, "visit_date", "Days (all when none chosen)")
trends = ui.fetch(context, TRENDS, {"facility_id": facility_id, **days})
if trends:
    data = ui.frame(trends).sort_values("visit_date")
    last = data.iloc[-1]
    change = last["week_over_week_change"]
    st.metric(f"Last 7 days to {last['visit_date']}", "withheld" if pd.isna(last["visit_count_7d"])
              else f"{int(last['visit_count_7d']):,}", delta=None if pd.isna(change) else f"{change:+.1%}",
              help="Visits in the 7 days, and the change on the 7 days before (week over week).")
    ui.line_chart(data, "visit_date", ["visit_count", "visit_count_7d_avg"])
    st.markdown("**Priority mix** over these days (withheld days left out)")
    mix = data[list(PRIORITIES)].sum(min_count=1).rename(index=PRIORITIES).reset_index()
    mix.columns = ["priority", "visits"]
    if mix["visits"].notna().any():
        ui.bar_chart(mix.dropna(), "priority", "visits")

st.subheader("Conditions by state and age band")
band = ui.choice(context, CONDITIONS, "age_band", "Age band")
conditions = ui.fetch(context, CONDITIONS, {"state": state, "age_band": band})
if conditions:
    data = ui.frame(conditions)
    by_condition = data.groupby("condition_name", as_index=False)["visit_count"].sum(min_count=1).dropna()
    if by_condition.empty:
        st.caption("Every count here is withheld (1 to 9): no chart.")
    else:
        ui.bar_chart(by_condition, "condition_name", "visit_count")
    ui.table(data[["state", "age_band", "sex", "condition_name", "visit_count", "patient_count",
                       "share_of_state_visits", "is_suppressed"]], "conditions")
