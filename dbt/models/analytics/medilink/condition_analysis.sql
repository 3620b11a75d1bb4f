{#
    One row per state, age band, sex and condition named at triage. Visits and distinct patients with that
    condition, and the condition's share of the visits in its state. Age is the patient's age on the visit
    day. De-identified: no patient ids, names or birth dates; bands, not ages; and disclosure control
    (macros/disclosure_control.sql): a group of fewer patients than the threshold shows none of its figures
    (is_suppressed), the others' counts are rounded. Feeds BI and the API.

    Published from exact counts kept up to date in core (docs/decisions/0016-incremental-state-of-the-patient-marts.md):
    visits from int_condition_visits_daily, distinct patients as the (patient, condition, age band) rows of
    int_condition_patients, the state's visits from int_facility_activity; none of them reads the facts.
#}
with

condition_visits as (

    select * from {{ ref('int_condition_visits_daily') }}

),

condition_patients as (

    select * from {{ ref('int_condition_patients') }}
    where patient_id is not null

),

facility_activity as (

    select * from {{ ref('int_facility_activity') }}

),

visit_groups as (

    select
        state,
        age_band,
        sex,
        condition_name,
        cast(sum(visit_count) as bigint) as visit_count
    from condition_visits
    group by 1, 2, 3, 4

),

patient_groups as (

    -- One row per group and patient: counting them counts distinct patients.
    select
        state,
        age_band,
        sex,
        condition_name,
        count(*) as patient_count
    from condition_patients
    group by 1, 2, 3, 4

),

state_visits as (

    select
        state,
        sum(triage_visit_count) as state_visit_count
    from facility_activity
    group by 1

),

grouped as (

    select
        visit_groups.state,
        visit_groups.age_band,
        visit_groups.sex,
        visit_groups.condition_name,
        visit_groups.visit_count,
        patient_groups.patient_count
    from visit_groups
    inner join patient_groups
        on visit_groups.state = patient_groups.state
        and visit_groups.age_band = patient_groups.age_band
        and visit_groups.sex = patient_groups.sex
        and visit_groups.condition_name = patient_groups.condition_name

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
