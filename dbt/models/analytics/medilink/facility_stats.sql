{#
    One row per state with at least one facility: the seed API's facility statistics (served at
    GET /api/v1/analytics/facility-stats). Counts add up the facilities' true counts (int_facility_activity)
    and then pass disclosure control (macros/disclosure_control.sql) as counts of their own: a state total is
    not the sum of facility_performance's rounded figures. The average triage level is over every visit in
    the state, not an average of facility averages. De-identified.
#}
with

facility_activity as (

    select * from {{ ref('int_facility_activity') }}

),

state_counts as (

    select
        state,
        count(*) as facility_count,
        cast(sum(patient_count) as bigint) as patient_count,
        cast(sum(medical_record_count) as bigint) as medical_record_count,
        cast(sum(triage_visit_count) as bigint) as triage_visit_count,
        cast(sum(urgent_visit_count) as bigint) as urgent_visit_count,
        cast(sum(triage_level_sum) as bigint) as triage_level_sum
    from facility_activity
    group by 1

),

marked as (

    select
        *,
        {{ sdc_is_small('patient_count') }} as is_patient_count_suppressed,
        {{ sdc_is_small('medical_record_count') }} as is_medical_record_count_suppressed,
        {{ sdc_is_small('triage_visit_count') }} as is_triage_visit_count_suppressed,
        {{ sdc_is_small('triage_visit_count') }} or {{ sdc_is_small('urgent_visit_count') }}
            as is_urgent_visit_count_suppressed
    from state_counts

),

final as (

    select
        state,
        -- Facilities, not people: published as they are.
        facility_count,
        {{ sdc_publish('patient_count', 'is_patient_count_suppressed') }} as patient_count,
        {{ sdc_publish('medical_record_count', 'is_medical_record_count_suppressed') }} as medical_record_count,
        {{ sdc_publish('triage_visit_count', 'is_triage_visit_count_suppressed') }} as triage_visit_count,
        {{ sdc_publish('urgent_visit_count', 'is_urgent_visit_count_suppressed') }} as urgent_visit_count,
        case when not is_triage_visit_count_suppressed then
            round(triage_level_sum::numeric / nullif(triage_visit_count, 0), 2)
        end as avg_triage_level,
        is_patient_count_suppressed,
        is_medical_record_count_suppressed,
        is_triage_visit_count_suppressed,
        is_urgent_visit_count_suppressed,
        cast('{{ run_started_at.isoformat() }}' as timestamptz) as built_at
    from marked

)

select * from final
