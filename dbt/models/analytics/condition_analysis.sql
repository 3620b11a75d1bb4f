{#
    One row per state, age band, sex and condition named at triage. Visits and distinct patients with that
    condition, and the condition's share of the visits in its state. Age is the patient's age on the visit
    day. De-identified: no patient ids, names or birth dates; bands, not ages; and disclosure control
    (macros/disclosure_control.sql): a group of fewer patients than the threshold shows none of its figures
    (is_suppressed), the others' counts are rounded. Feeds BI and the API.
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

    -- One row per visit and distinct condition named at it, with the patient's age on the visit day.
    select
        triage_visits.facility_id,
        triage_visits.patient_id,
        {{ age_in_years('patients.birth_date', 'triage_visits.visit_date') }} as age_years,
        coalesce(patients.sex, 'Unknown') as sex,
        visit_condition.condition_name
    from triage_visits
    inner join patients
        on triage_visits.patient_id = patients.patient_id
    cross join lateral (
        select distinct lower(condition_name) as condition_name
        from unnest(triage_visits.conditions) as named (condition_name)
    ) as visit_condition

),

patient_conditions as (

    -- One row per group and patient: counting these rows counts distinct patients, adding up their
    -- visit counts counts visits, both by hashing (no sort of every visit).
    select
        facilities.state,
        {{ age_band('visit_conditions.age_years') }} as age_band,
        visit_conditions.sex,
        visit_conditions.condition_name,
        visit_conditions.patient_id,
        count(*) as visit_count
    from visit_conditions
    inner join facilities
        on visit_conditions.facility_id = facilities.facility_id
    group by 1, 2, 3, 4, 5

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
        cast(sum(visit_count) as bigint) as visit_count,
        count(*) as patient_count
    from patient_conditions
    group by 1, 2, 3, 4

),

marked as (

    select
        grouped.*,
        state_visits.state_visit_count,
        -- The patients are who the group is about; its visits are at least as many.
        {{ sdc_is_small('grouped.patient_count') }} as is_suppressed
    from grouped
    inner join state_visits
        on grouped.state = state_visits.state

),

final as (

    select
        state,
        age_band,
        sex,
        condition_name,
        {{ sdc_publish('visit_count', 'is_suppressed') }} as visit_count,
        {{ sdc_publish('patient_count', 'is_suppressed') }} as patient_count,
        -- The published visits over the state's published visits (facility_stats.triage_visit_count), so it
        -- says no more than those figures do. A state of fewer visits than the threshold has only withheld rows.
        round(cast({{ sdc_publish('visit_count', 'is_suppressed') }} as numeric)
              / nullif({{ sdc_publish('state_visit_count') }}, 0), 4) as share_of_state_visits,
        is_suppressed,
        cast('{{ run_started_at.isoformat() }}' as timestamptz) as built_at
    from marked

)

select * from final
