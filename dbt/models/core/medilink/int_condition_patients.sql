{#
    One row per patient, condition named at triage and age band the patient was in when it was named (age on
    the visit day), with the patient's state and sex and the first day of that: counting these rows per
    (state, age band, sex, condition) counts distinct patients, which condition_analysis publishes. Plus one
    bookkeeping row per reporting day of the visits taken in (macros/absorbed_days.sql).

    Incremental (docs/decisions/0016-incremental-state-of-the-patient-marts.md): distinct patients do not add
    up across days, but first sightings do. A new (or late) day adds the pairs it names for the first time, or
    moves a pair's first day earlier, from that day's rows alone. A day whose files changed (re-delivered,
    superseded, set aside) can take away the first sighting of the pairs first seen on it: those patients,
    and the patients on the day now, have their pairs recomputed from their own visits (the fact's
    (patient, day) index). A full build computes every pair; the result is the same
    (tests/dbt/test_incremental.py). Like the facts, a change in the dimensions needs a full refresh.
#}
{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='row_key',
        on_schema_change='append_new_columns',
        indexes=[{'columns': ['row_key'], 'unique': True}, {'columns': ['first_visit_date']}],
        post_hook="{{ delete_absorbed_leftovers('state_rows.first_visit_date is null') }}",
    )
}}
{%- set visit_fact = {'kind': 'triage_visits', 'relation': ref('fct_triage_visits'), 'drop_type': 'medilink_triage_visits'} -%}
{%- if is_incremental() and execute -%}
    {%- set changes = absorbed_day_changes([visit_fact]) -%}
    {%- set new_days = absorbed_days_of(changes, 'triage_visits', ['new']) -%}
    {%- set changed_days = absorbed_days_of(changes, 'triage_visits', ['changed']) -%}
{%- endif -%}

-- The ledger is read by the day bookkeeping (macros/absorbed_days.sql): declared for dbt's ordering.
-- depends_on: {{ ref('stg_ops__file_ledger') }}

with

-- Read by several steps below, each through its own index: not materialized (that would copy the fact).
triage_visits as not materialized (

    select
        patient_id,
        facility_id,
        visit_date,
        conditions
    from {{ ref('fct_triage_visits') }}

),

patients as (

    select * from {{ ref('dim_patients') }}

),

facilities as (

    select * from {{ ref('dim_facilities') }}

),

{% if is_incremental() %}

previous as not materialized (

    select * from {{ this }}
    where patient_id is not null

),

-- Patients whose first sightings may have moved: first seen on a changed day, or on a changed day now.
recomputed_patients as (

    select previous.patient_id
    from previous
    where {{ day_in('previous.first_visit_date', changed_days) }}

    union

    select triage_visits.patient_id
    from triage_visits
    where {{ day_in('triage_visits.visit_date', changed_days) }}

),

visits_in as (

    -- Every visit of a recomputed patient; the new days' visits of the others.
    select triage_visits.*
    from triage_visits
    where triage_visits.patient_id = any(array(select patient_id from recomputed_patients))

    union all

    select triage_visits.*
    from triage_visits
    where {{ day_in('triage_visits.visit_date', new_days) }}
        and triage_visits.patient_id <> all(array(select patient_id from recomputed_patients))

),

{% else %}

recomputed_patients as (select cast(null as text) as patient_id where false),

visits_in as (

    select * from triage_visits

),

{% endif %}

sightings as (

    select
        {{ surrogate_key(['visits_in.patient_id', 'visit_condition.condition_name', age_band(age_in_years('patients.birth_date', 'visits_in.visit_date'))]) }} as row_key,
        visits_in.patient_id,
        visit_condition.condition_name,
        {{ age_band(age_in_years('patients.birth_date', 'visits_in.visit_date')) }} as age_band,
        facilities.state,
        coalesce(patients.sex, 'Unknown') as sex,
        min(visits_in.visit_date) as first_visit_date
    from visits_in
    inner join patients
        on visits_in.patient_id = patients.patient_id
    inner join facilities
        on visits_in.facility_id = facilities.facility_id
    cross join lateral (
        select distinct lower(condition_name) as condition_name
        from unnest(visits_in.conditions) as named (condition_name)
    ) as visit_condition
    group by 1, 2, 3, 4, 5, 6

),

pair_rows as (

    {% if is_incremental() %}
    -- A recomputed patient's pairs as they are now; one no longer seen is written empty (first_visit_date
    -- null), which the post-hook removes.
    select
        coalesce(sightings.row_key, previous.row_key) as row_key,
        coalesce(sightings.patient_id, previous.patient_id) as patient_id,
        coalesce(sightings.condition_name, previous.condition_name) as condition_name,
        coalesce(sightings.age_band, previous.age_band) as age_band,
        coalesce(sightings.state, previous.state) as state,
        coalesce(sightings.sex, previous.sex) as sex,
        sightings.first_visit_date
    from (
        select * from sightings
        where sightings.patient_id = any(array(select patient_id from recomputed_patients))
    ) as sightings
    full outer join (
        select * from previous
        where previous.patient_id = any(array(select patient_id from recomputed_patients))
    ) as previous
        on sightings.row_key = previous.row_key

    union all

    -- Another patient's pairs seen on a new day: written when new, or first seen earlier than before (a late day).
    select
        sightings.row_key,
        sightings.patient_id,
        sightings.condition_name,
        sightings.age_band,
        sightings.state,
        sightings.sex,
        sightings.first_visit_date
    from sightings
    left join previous
        on sightings.row_key = previous.row_key
    where sightings.patient_id <> all(array(select patient_id from recomputed_patients))
        and (previous.row_key is null or sightings.first_visit_date < previous.first_visit_date)
    {% else %}
    select row_key, patient_id, condition_name, age_band, state, sex, first_visit_date
    from sightings
    {% endif %}

),

day_rows as (

    {% if is_incremental() %}
    {{ absorbed_day_rows(visit_fact, days=absorbed_days_of(changes, 'triage_visits', ['new', 'changed'])) }}
    {% else %}
    {{ absorbed_day_rows(visit_fact) }}
    {% endif %}

),

final as (

    select
        row_key,
        patient_id,
        condition_name,
        age_band,
        state,
        sex,
        first_visit_date,
        cast(null as text) as row_kind,
        cast(null as date) as reporting_day,
        cast(null as bigint[]) as file_ids,
        cast('{{ run_started_at.isoformat() }}' as timestamptz) as built_at
    from pair_rows

    union all

    select
        row_key,
        cast(null as text) as patient_id,
        cast(null as text) as condition_name,
        cast(null as text) as age_band,
        cast(null as text) as state,
        cast(null as text) as sex,
        cast(null as date) as first_visit_date,
        row_kind,
        reporting_day,
        file_ids,
        cast('{{ run_started_at.isoformat() }}' as timestamptz) as built_at
    from day_rows

)

select * from final
