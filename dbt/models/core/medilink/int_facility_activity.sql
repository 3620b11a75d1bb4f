{#
    One row per facility (every row of dim_facilities): its patients, medical records and triage visits over
    all loaded data, as true counts. Not published: facility_performance and facility_stats publish these
    figures after disclosure control (macros/disclosure_control.sql), so both start from the same counts and
    assert_facility_activity_reconciles_with_core checks them against the facts.
#}
with

facilities as (

    select * from {{ ref('dim_facilities') }}

),

patients as (

    select * from {{ ref('dim_patients') }}

),

daily_records as (

    select * from {{ ref('int_medical_records_daily') }}

),

daily_visits as (

    select * from {{ ref('int_triage_visits_daily') }}

),

patient_counts as (

    select
        facility_id,
        count(*) as patient_count
    from patients
    group by 1

),

medical_record_counts as (

    select
        facility_id,
        sum(record_count) as medical_record_count
    from daily_records
    group by 1

),

triage_visit_summary as (

    select
        facility_id,
        sum(visit_count) as triage_visit_count,
        sum(urgent_count) as urgent_visit_count,
        sum(triage_level_sum) as triage_level_sum,
        min(visit_date) as first_visit_date,
        max(visit_date) as last_visit_date,
        count(*) as active_days
    from daily_visits
    group by 1

),

final as (

    select
        facilities.facility_id,
        facilities.facility_name,
        facilities.state,
        facilities.lga,
        facilities.facility_type,
        cast(coalesce(patient_counts.patient_count, 0) as bigint) as patient_count,
        cast(coalesce(medical_record_counts.medical_record_count, 0) as bigint) as medical_record_count,
        cast(coalesce(triage_visit_summary.triage_visit_count, 0) as bigint) as triage_visit_count,
        cast(coalesce(triage_visit_summary.urgent_visit_count, 0) as bigint) as urgent_visit_count,
        cast(coalesce(triage_visit_summary.triage_level_sum, 0) as bigint) as triage_level_sum,
        triage_visit_summary.first_visit_date,
        triage_visit_summary.last_visit_date,
        cast(coalesce(triage_visit_summary.active_days, 0) as integer) as active_days,
        cast('{{ run_started_at.isoformat() }}' as timestamptz) as built_at
    from facilities
    left join patient_counts
        on facilities.facility_id = patient_counts.facility_id
    left join medical_record_counts
        on facilities.facility_id = medical_record_counts.facility_id
    left join triage_visit_summary
        on facilities.facility_id = triage_visit_summary.facility_id

)

select * from final
