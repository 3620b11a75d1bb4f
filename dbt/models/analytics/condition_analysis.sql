{#
    One row per state, age band, sex and condition named at triage. Visits and distinct patients with that
    condition, and the condition's share of the visits in its state. Age is the patient's age on the visit
    day. De-identified: no patient ids, names or birth dates; bands, not ages. Feeds BI and the API.
#}
with

triage_visits as (

    select * from {{ ref('fct_triage_visits') }}

),

patients as (

    select * from {{ ref('dim_patients') }}

),

facilities as (

    select * from {{ ref('dim_facilities') }}

),

visit_conditions as (

    select
        facilities.state,
        {{ age_band(age_in_years('patients.birth_date', 'triage_visits.visit_date')) }} as age_band,
        coalesce(patients.sex, 'Unknown') as sex,
        lower(visit_condition.condition_name) as condition_name,
        triage_visits.triage_visit_id,
        triage_visits.patient_id
    from triage_visits
    inner join patients
        on triage_visits.patient_id = patients.patient_id
    inner join facilities
        on triage_visits.facility_id = facilities.facility_id
    cross join lateral unnest(triage_visits.conditions) as visit_condition (condition_name)

),

state_visits as (

    select
        facilities.state,
        count(*) as state_visit_count
    from triage_visits
    inner join facilities
        on triage_visits.facility_id = facilities.facility_id
    group by 1

),

grouped as (

    select
        state,
        age_band,
        sex,
        condition_name,
        count(distinct triage_visit_id) as visit_count,
        count(distinct patient_id) as patient_count
    from visit_conditions
    group by 1, 2, 3, 4

),

final as (

    select
        grouped.state,
        grouped.age_band,
        grouped.sex,
        grouped.condition_name,
        grouped.visit_count,
        grouped.patient_count,
        round(grouped.visit_count::numeric / state_visits.state_visit_count, 4) as share_of_state_visits,
        cast('{{ run_started_at.isoformat() }}' as timestamptz) as built_at
    from grouped
    inner join state_visits
        on grouped.state = state_visits.state

)

select * from final
