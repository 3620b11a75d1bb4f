"""The patient-level endpoints: patients, their 12-month summaries, medical records and triage visits.

Personal data: the clinician role and above only, and every read is written to ops.api_audit (who, when,
which endpoint, which parameters) before any row is served: `patient_level=True` in the declaration is what
makes backend/api/listing.py write it, in the same transaction as the page's read.
"""

from __future__ import annotations

from backend.api.listing import Column, Resource

PATIENTS = Resource(
    name="patients",
    table="core.dim_patients",
    summary="Patients as their facility registered them (latest patients file).",
    columns=(
        Column("patient_id", filter="eq", sortable=True),
        Column("facility_id", filter="eq"),
        Column("first_name"),
        Column("last_name", filter="eq"),
        Column("sex", filter="eq"),
        Column("birth_date", "date"),
        Column("phone_number"),
        Column("first_reported_date", "date"),
        Column("last_reported_date", "date"),
    ),
    key=("patient_id",),
    default_sort="patient_id",
    role="clinician",
    patient_level=True,
    drop_types=("medilink_facilities", "medilink_patients"),
    path="/patients",
)

PATIENT_SUMMARY = Resource(
    name="patient-summary",
    table="clinical.patient_summary",
    summary="One row per patient: 12 months of visits and records up to the latest activity date, risk flags.",
    columns=(
        Column("patient_id", filter="eq", sortable=True),
        Column("facility_id", filter="eq"),
        Column("first_name"),
        Column("last_name"),
        Column("sex", filter="eq"),
        Column("birth_date", "date"),
        Column("age_years", "integer"),
        Column("age_band", filter="eq"),
        Column("as_of_date", "date"),
        Column("triage_visit_count_12m", "integer"),
        Column("urgent_visit_count_12m", "integer"),
        Column("avg_triage_level_12m", "number"),
        Column("last_visit_date", "date"),
        Column("last_triage_level", "integer"),
        Column("last_systolic_bp", "integer"),
        Column("last_diastolic_bp", "integer"),
        Column("conditions_12m", "text[]"),
        Column("medical_record_count_12m", "integer"),
        Column("last_record_date", "date"),
        Column("recent_diagnoses", "text[]"),
        Column("is_hypertensive_last_reading", "boolean", filter="eq"),
        Column("is_frequent_visitor", "boolean", filter="eq"),
        Column("has_critical_visit_30d", "boolean", filter="eq"),
        Column("is_65_or_older", "boolean", filter="eq"),
    ),
    key=("patient_id",),
    default_sort="patient_id",
    role="clinician",
    patient_level=True,
    path="/patient-summary",
)  # built from every Medilink drop type: its family's

MEDICAL_RECORDS = Resource(
    name="medical-records",
    table="core.fct_medical_records",
    summary="Medical records that resolve to one patient, with the file and row each came from.",
    columns=(
        Column("medical_record_id", sortable=True),
        Column("facility_id", filter="eq"),
        Column("patient_id", filter="eq"),
        Column("record_date", "date", filter="range", sortable=True),
        Column("record_type", filter="eq"),
        Column("diagnosis", filter="eq"),
        Column("treatment"),
        Column("medications"),
        Column("notes"),
        Column("file_id", "integer"),
        Column("source_row_number", "integer"),
    ),
    key=("medical_record_id",),
    default_sort="record_date",
    role="clinician",
    patient_level=True,
    drop_types=("medilink_facilities", "medilink_patients", "medilink_medical_records"),
    path="/medical-records",
)

TRIAGE_VISITS = Resource(
    name="triage-visits",
    table="core.fct_triage_visits",
    summary="Triage visits that resolve to one patient: level, priority, blood pressure, conditions.",
    columns=(
        Column("triage_visit_id", sortable=True),
        Column("facility_id", filter="eq"),
        Column("patient_id", filter="eq"),
        Column("visit_date", "date", filter="range", sortable=True),
        Column("triage_level", "integer", filter="eq"),
        Column("priority", filter="eq", choices=("Critical", "High", "Medium", "Low")),
        Column("is_urgent", "boolean", filter="eq"),
        Column("chief_complaint"),
        Column("vital_signs"),
        Column("systolic_bp", "integer"),
        Column("diastolic_bp", "integer"),
        Column("conditions", "text[]"),
        Column("recommendations", "text[]"),
        Column("file_id", "integer"),
        Column("source_row_number", "integer"),
    ),
    key=("triage_visit_id",),
    default_sort="visit_date",
    role="clinician",
    patient_level=True,
    drop_types=("medilink_facilities", "medilink_patients", "medilink_triage_visits"),
    path="/triage-visits",
)

# What the medilink family's API serves from this module (backend/api/catalogue.py routes and documents them).
RESOURCES = (PATIENTS, PATIENT_SUMMARY, MEDICAL_RECORDS, TRIAGE_VISITS)
