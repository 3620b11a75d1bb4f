{#
    One row per facility. Patient, record and triage volumes, acuity and activity; facilities without
    activity show zeros. De-identified: no patient-level columns. Read by GET /api/v1/facilities.
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
        sum(triage_level_sum)::numeric / sum(visit_count) as avg_triage_level,
        min(visit_date) as first_visit_date,
        max(visit_date) as last_visit_date,
        count(*) as active_days
    from daily_visits
    group by 1

),

facility_activity as (

    select
        facilities.facility_id,
        facilities.facility_name,
        facilities.state,
        facilities.lga,
        facilities.facility_type,
        coalesce(patient_counts.patient_count, 0) as patient_count,
        coalesce(medical_record_counts.medical_record_count, 0) as medical_record_count,
        coalesce(triage_visit_summary.triage_visit_count, 0) as triage_visit_count,
        coalesce(triage_visit_summary.urgent_visit_count, 0) as urgent_visit_count,
        triage_visit_summary.avg_triage_level,
        triage_visit_summary.first_visit_date,
        triage_visit_summary.last_visit_date,
        coalesce(triage_visit_summary.active_days, 0) as active_days
    from facilities
    left join patient_counts
        on facilities.facility_id = patient_counts.facility_id
    left join medical_record_counts
        on facilities.facility_id = medical_record_counts.facility_id
    left join triage_visit_summary
        on facilities.facility_id = triage_visit_summary.facility_id

),

final as (

    select
        facility_id,
        facility_name,
        state,
        lga,
        facility_type,
        cast(patient_count as bigint) as patient_count,
        cast(medical_record_count as bigint) as medical_record_count,
        cast(triage_visit_count as bigint) as triage_visit_count,
        cast(urgent_visit_count as bigint) as urgent_visit_count,
        cast(round(avg_triage_level, 2) as numeric(4, 2)) as avg_triage_level,
        first_visit_date,
        last_visit_date,
        cast(active_days as integer) as active_days,
        cast(round(cast(triage_visit_count as numeric) / nullif(active_days, 0), 2) as numeric(12, 2)) as avg_daily_visits,
        case
            when triage_visit_count >= 50 then 'High'
            when triage_visit_count >= 10 then 'Medium'
            else 'Low'
        end as volume_band,
        cast('{{ run_started_at.isoformat() }}' as timestamptz) as built_at
    from facility_activity

)

select * from final
