{#
    One row per facility. Patient, record and triage volumes, acuity and activity; facilities without
    activity show zeros. De-identified: no patient-level columns, and every count passes disclosure control
    (macros/disclosure_control.sql): 1 to threshold-1 withheld (null, marked), the rest rounded. A facility
    whose visits are withheld shows nothing else about them either. Read by GET /api/v1/facilities.
#}
with

facility_activity as (

    select * from {{ ref('int_facility_activity') }}

),

marked as (

    select
        *,
        {{ sdc_is_small('patient_count') }} as is_patient_count_suppressed,
        {{ sdc_is_small('medical_record_count') }} as is_medical_record_count_suppressed,
        {{ sdc_is_small('triage_visit_count') }} as is_triage_visit_count_suppressed,
        -- A part of a withheld group is withheld with it (zeros too).
        {{ sdc_is_small('triage_visit_count') }} or {{ sdc_is_small('urgent_visit_count') }}
            as is_urgent_visit_count_suppressed
    from facility_activity

),

published as (

    select
        *,
        {{ sdc_publish('patient_count', 'is_patient_count_suppressed') }} as published_patient_count,
        {{ sdc_publish('medical_record_count', 'is_medical_record_count_suppressed') }}
            as published_medical_record_count,
        {{ sdc_publish('triage_visit_count', 'is_triage_visit_count_suppressed') }} as published_triage_visit_count,
        {{ sdc_publish('urgent_visit_count', 'is_urgent_visit_count_suppressed') }} as published_urgent_visit_count
    from marked

),

final as (

    select
        facility_id,
        facility_name,
        state,
        lga,
        facility_type,
        published_patient_count as patient_count,
        published_medical_record_count as medical_record_count,
        published_triage_visit_count as triage_visit_count,
        published_urgent_visit_count as urgent_visit_count,
        -- A mean over at least threshold visits; withheld with the visit count.
        case when not is_triage_visit_count_suppressed then
            cast(round(triage_level_sum::numeric / nullif(triage_visit_count, 0), 2) as numeric(4, 2))
        end as avg_triage_level,
        case when not is_triage_visit_count_suppressed then first_visit_date end as first_visit_date,
        case when not is_triage_visit_count_suppressed then last_visit_date end as last_visit_date,
        case when not is_triage_visit_count_suppressed then active_days end as active_days,
        -- From the published count, so it says no more than the count does.
        cast(round(published_triage_visit_count::numeric / nullif(active_days, 0), 2) as numeric(12, 2))
            as avg_daily_visits,
        -- From the true count: a band is a range itself (Low: 0 to 9), as wide as the withheld one.
        case
            when triage_visit_count >= 50 then 'High'
            when triage_visit_count >= 10 then 'Medium'
            else 'Low'
        end as volume_band,
        is_patient_count_suppressed,
        is_medical_record_count_suppressed,
        is_triage_visit_count_suppressed,
        is_urgent_visit_count_suppressed,
        cast('{{ run_started_at.isoformat() }}' as timestamptz) as built_at
    from published

)

select * from final
