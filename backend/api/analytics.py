"""The de-identified analytics marts (no names, phone numbers or birth dates; age bands; opaque ids):
monthly facility figures, daily triage trends, conditions by state, age band and sex, and the seed's
facility statistics per state. The analyst role and above.

Every count of people or of their visits and records is under disclosure control in the mart itself
(dbt/macros/disclosure_control.sql): 0 as is, 1 to SDC_THRESHOLD-1 withheld (null, with its `is_..._suppressed`
marker served beside it), larger counts rounded to the nearest SDC_ROUNDING_BASE. The API serves the marts as
BI tools read them: there is no unprotected copy to reach.
"""

from __future__ import annotations

from backend.api.listing import Column, Resource

AGE_BANDS = ("0-4", "5-14", "15-24", "25-44", "45-64", "65+", "Unknown")

FACILITY_MONTHLY = Resource(
    name="facility-monthly",
    table="analytics.facility_monthly",
    summary="One row per facility per calendar month: volumes, daily averages over reporting days, acuity.",
    columns=(
        Column("facility_id", filter="eq", sortable=True),
        Column("facility_name"),
        Column("state", filter="eq"),
        Column("month_start", "date", filter="range", sortable=True),
        Column("triage_visit_count", "integer"),
        Column("urgent_visit_count", "integer"),
        Column("visit_days", "integer"),
        Column("avg_daily_visits", "number"),
        Column("urgent_share", "number"),
        Column("avg_triage_level", "number"),
        Column("medical_record_count", "integer"),
        Column("is_triage_visit_count_suppressed", "boolean"),
        Column("is_urgent_visit_count_suppressed", "boolean"),
        Column("is_medical_record_count_suppressed", "boolean"),
    ),
    key=("facility_id", "month_start"),
    default_sort="month_start",
    path="/facility-monthly",
)

TRIAGE_TRENDS = Resource(
    name="triage-trends",
    table="analytics.triage_trends",
    summary="One row per facility per day: triage volume, priority mix, 7-day moving average, week-over-week change.",
    columns=(
        Column("facility_id", filter="eq", sortable=True),
        Column("facility_name"),
        Column("state", filter="eq"),
        Column("visit_date", "date", filter="range", sortable=True),
        Column("visit_count", "integer"),
        Column("critical_count", "integer"),
        Column("high_count", "integer"),
        Column("medium_count", "integer"),
        Column("low_count", "integer"),
        Column("urgent_share", "number"),
        Column("visit_count_7d", "integer"),
        Column("visit_count_7d_avg", "number"),
        Column("is_full_window", "boolean"),
        Column("visit_count_prev_7d", "integer"),
        Column("week_over_week_change", "number"),
        Column("is_visit_count_suppressed", "boolean"),
        Column("is_priority_mix_suppressed", "boolean"),
        Column("is_visit_count_7d_suppressed", "boolean"),
        Column("is_visit_count_prev_7d_suppressed", "boolean"),
    ),
    key=("facility_id", "visit_date"),
    default_sort="visit_date",
    drop_types=("medilink_facilities", "medilink_patients", "medilink_triage_visits"),
    path="/triage-trends",
)

CONDITION_ANALYSIS = Resource(
    name="condition-analysis",
    table="analytics.condition_analysis",
    summary="Triage visits and distinct patients per condition, by state, age band (age on the visit day) and sex.",
    columns=(
        Column("state", filter="eq", sortable=True),
        Column("age_band", filter="eq", choices=AGE_BANDS, sortable=True),
        Column("sex", filter="eq", sortable=True),
        Column("condition_name", filter="eq", sortable=True),
        Column("visit_count", "integer"),
        Column("patient_count", "integer"),
        Column("share_of_state_visits", "number"),
        Column("is_suppressed", "boolean", filter="eq"),
    ),
    key=("state", "age_band", "sex", "condition_name"),
    default_sort="state",
    drop_types=("medilink_facilities", "medilink_patients", "medilink_triage_visits"),
    path="/condition-analysis",
)

FACILITY_STATS = Resource(
    name="facility-stats",
    table="analytics.facility_stats",
    summary="Facility statistics per state, as the seed API had them: facilities, patients, records, visits.",
    columns=(
        Column("state", filter="eq", sortable=True),
        Column("facility_count", "integer", sortable=True),
        Column("patient_count", "integer"),
        Column("medical_record_count", "integer"),
        Column("triage_visit_count", "integer"),
        Column("urgent_visit_count", "integer"),
        Column("avg_triage_level", "number"),
        Column("is_patient_count_suppressed", "boolean"),
        Column("is_medical_record_count_suppressed", "boolean"),
        Column("is_triage_visit_count_suppressed", "boolean"),
        Column("is_urgent_visit_count_suppressed", "boolean"),
    ),
    key=("state",),
    default_sort="state",
    path="/analytics/facility-stats",
)

# What the medilink family's API serves from this module, in the order /openapi.json lists them (the catalogue:
# backend/api/catalogue.py). Without drop_types, a resource is built from every drop type of its family.
RESOURCES = (FACILITY_STATS, FACILITY_MONTHLY, TRIAGE_TRENDS, CONDITION_ANALYSIS)
