{#
    One row per state with at least one facility: the seed API's facility statistics (served at
    GET /api/v1/analytics/facility-stats). Counts add up facility_performance; the average triage level
    is over every visit in the state, not an average of facility averages. De-identified.
#}
with

facility_performance as (

    select * from {{ ref('facility_performance') }}

),

daily_visits as (

    select * from {{ ref('int_triage_visits_daily') }}

),

facilities as (

    select * from {{ ref('dim_facilities') }}

),

state_acuity as (

    select
        facilities.state,
        round(sum(daily_visits.triage_level_sum)::numeric / sum(daily_visits.visit_count), 2) as avg_triage_level
    from daily_visits
    inner join facilities
        on daily_visits.facility_id = facilities.facility_id
    group by 1

),

state_counts as (

    select
        state,
        count(*) as facility_count,
        cast(sum(patient_count) as bigint) as patient_count,
        cast(sum(medical_record_count) as bigint) as medical_record_count,
        cast(sum(triage_visit_count) as bigint) as triage_visit_count,
        cast(sum(urgent_visit_count) as bigint) as urgent_visit_count
    from facility_performance
    group by 1

),

final as (

    select
        state_counts.state,
        state_counts.facility_count,
        state_counts.patient_count,
        state_counts.medical_record_count,
        state_counts.triage_visit_count,
        state_counts.urgent_visit_count,
        state_acuity.avg_triage_level,
        cast('{{ run_started_at.isoformat() }}' as timestamptz) as built_at
    from state_counts
    left join state_acuity
        on state_counts.state = state_acuity.state

)

select * from final
