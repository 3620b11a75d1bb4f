{#
    The per-facility counts of int_facility_activity (the true counts that facility_performance and
    facility_stats publish after disclosure control) add up to the core tables they summarise: every patient,
    medical record and triage visit is counted at exactly one facility. Returns a row on mismatch.
#}
with

facility_activity as (

    select * from {{ ref('int_facility_activity') }}

),

patients as (

    select * from {{ ref('dim_patients') }}

),

medical_records as (

    select * from {{ ref('fct_medical_records') }}

),

triage_visits as (

    select * from {{ ref('fct_triage_visits') }}

),

mart_totals as (

    select
        coalesce(sum(patient_count), 0) as patient_count,
        coalesce(sum(medical_record_count), 0) as medical_record_count,
        coalesce(sum(triage_visit_count), 0) as triage_visit_count,
        coalesce(sum(urgent_visit_count), 0) as urgent_visit_count
    from facility_activity

),

core_totals as (

    select
        (select count(*) from patients) as patient_count,
        (select count(*) from medical_records) as medical_record_count,
        (select count(*) from triage_visits) as triage_visit_count,
        (select count(*) from triage_visits where is_urgent) as urgent_visit_count

),

final as (

    select
        mart_totals.*,
        core_totals.patient_count as core_patient_count,
        core_totals.medical_record_count as core_medical_record_count,
        core_totals.triage_visit_count as core_triage_visit_count,
        core_totals.urgent_visit_count as core_urgent_visit_count
    from mart_totals
    cross join core_totals
    where mart_totals.patient_count <> core_totals.patient_count
        or mart_totals.medical_record_count <> core_totals.medical_record_count
        or mart_totals.triage_visit_count <> core_totals.triage_visit_count
        or mart_totals.urgent_visit_count <> core_totals.urgent_visit_count

)

select * from final
