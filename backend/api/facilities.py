"""GET /api/v1/facilities: every facility with its activity figures, from analytics.facility_performance.

De-identified (no patient-level column, counts under disclosure control: withheld counts are null with an
`is_<count>_suppressed` marker, dbt/macros/disclosure_control.sql): the analyst role and above. Counts do not sort:
a withheld one has no place in an order, and keyset pages need a value in every row.
"""

from __future__ import annotations

from backend.api.listing import Column, Resource

FACILITIES = Resource(
    name="facilities",
    table="analytics.facility_performance",
    summary="Facilities with their patient, record and triage volumes, acuity and activity.",
    columns=(
        Column("facility_id", filter="eq", sortable=True),
        Column("facility_name", sortable=True),
        Column("state", filter="eq", sortable=True),
        Column("lga", filter="eq"),
        Column("facility_type", filter="eq"),
        Column("patient_count", "integer"),
        Column("medical_record_count", "integer"),
        Column("triage_visit_count", "integer"),
        Column("urgent_visit_count", "integer"),
        Column("avg_triage_level", "number"),
        Column("first_visit_date", "date"),
        Column("last_visit_date", "date"),
        Column("active_days", "integer"),
        Column("avg_daily_visits", "number"),
        Column("volume_band", filter="eq", choices=("High", "Medium", "Low")),
        Column("is_patient_count_suppressed", "boolean"),
        Column("is_medical_record_count_suppressed", "boolean"),
        Column("is_triage_visit_count_suppressed", "boolean"),
        Column("is_urgent_visit_count_suppressed", "boolean"),
    ),
    key=("facility_id",),
    default_sort="facility_name",
    path="/facilities",
)  # built from every Medilink drop type: its family's (elt/families/medilink.yml)

# What the medilink family's API serves from this module (backend/api/catalogue.py routes and documents them).
RESOURCES = (FACILITIES,)
