"""Bed occupancy (NHS England KH03): England's occupancy by quarter against the 85% and 92% lines, the regions side by
side, the trusts above 92% in a quarter with their change on the quarter and the year before, one trust's history and
its specialty mix."""

from __future__ import annotations

import streamlit as st

from backend.dashboard import ui

view, context = ui.start(__file__)
NATIONAL, OCCUPANCY, PERIODS, HISTORY, SPECIALTIES = view.reads
LINES = ((0.85, "85%"), (0.92, "92%"))

left, right = st.columns(2)
with left:
    sector = ui.choice(context, NATIONAL, "sector", "Sector", default="General & Acute", everything=False)
periods = ui.fetch(context, PERIODS, {}, quiet=True)
quarters = [(p["financial_year"], p["quarter"]) for p in (periods.rows if periods else [])]  # newest first
with right:
    picked = st.selectbox("Quarter", quarters, format_func=lambda q: f"{q[0]} Q{q[1]}", key="quarter") if quarters \
        else None
financial_year, quarter = picked or (None, None)

st.subheader("England: occupancy by quarter")
national = ui.fetch(context, NATIONAL, {"sector": sector})
if national is None:
    st.stop()  # not built, or nothing for this sector: said once, not once per section
else:
    data = ui.frame(national)
    latest = data.sort_values("period_start").iloc[-1]
    st.metric(f"England, {latest['financial_year']} Q{latest['quarter']}", f"{latest['occupancy_rate']:.1%}",
              help="Average daily beds occupied over beds available, as the England row of the workbook has them.")
    ui.line_chart(data, "period_start", "occupancy_rate", lines=LINES, y_format="%")

st.subheader("Regions side by side")
quarter_filter = {"sector": sector, "financial_year": financial_year, "quarter": quarter}
regions = ui.fetch(context, OCCUPANCY, {"level": "region", **quarter_filter})
if regions:
    data = ui.frame(regions)
    ui.bar_chart(data, "region_name", "occupancy_rate", y_format="%")
    ui.table(data[["region_code", "region_name", "period_start", "occupancy_rate", "quarter_on_quarter_change",
                       "year_on_year_change"]], "regions")

st.subheader("Trusts above 92%")
above = ui.fetch(context, OCCUPANCY, {"level": "trust", "is_above_92_pct": "true", **quarter_filter},
                 none="No trust was above 92% in this quarter.")
if above:
    data = ui.frame(above).sort_values("occupancy_rate", ascending=False)
    ui.table(data[["org_code", "org_name", "region_name", "occupancy_rate", "quarter_on_quarter_change",
                       "year_on_year_change"]], "above_92")

st.subheader("One trust")
trusts = ui.fetch(context, OCCUPANCY, {"level": "trust", **quarter_filter}, quiet=True)
names = {t["org_code"]: f"{t['org_code']} {t['org_name']}" for t in (trusts.rows if trusts else [])}
org_code = st.selectbox("Trust", sorted(names), format_func=names.get, key="trust") if names else None
if org_code:
    history = ui.fetch(context, HISTORY, {"sector": sector}, values={"org_code": org_code})
    if history:
        ui.line_chart(ui.frame(history), "period_start", "occupancy_rate", lines=LINES, y_format="%")
    st.markdown("**Specialty mix** (share of the trust's occupied beds)")
    mix = ui.fetch(context, SPECIALTIES, {"org_code": org_code, "financial_year": financial_year, "quarter": quarter})
    if mix:
        data = ui.frame(mix)
        ui.bar_chart(data, "specialty_name", "share_of_trust_occupied", y_format="%")
        ui.table(data[["specialty_code", "specialty_name", "beds_occupied", "share_of_trust_occupied"]], "specialties")
