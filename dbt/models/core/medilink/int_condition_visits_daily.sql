{#
    One row per day, state, age band, sex and condition named at triage: the visits that named it. The
    visit counts of condition_analysis add up these rows instead of every visit, every night.

    Incremental like int_triage_visits_daily (delete+insert on visit_date, the days whose files changed;
    file_ids keeps the files behind each row). Age is the patient's age on the visit day; state and sex are
    the dimensions' as the day was built (a change in them needs a full refresh, as for the facts).
#}
{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='visit_date',
        on_schema_change='append_new_columns',
        indexes=[{'columns': ['visit_date']}],
        post_hook="{{ delete_rows_of_unloaded_files('medilink_triage_visits', file_ids_column='file_ids', date_column='visit_date') }}",
    )
}}
-- depends_on: {{ ref('stg_ops__file_ledger') }}

with

triage_visits as (

    select * from {{ ref('fct_triage_visits') }}
    {% if is_incremental() %}
    where {{ reporting_days_filter('medilink_triage_visits', 'visit_date', file_ids_column='file_ids') }}
    {% endif %}

),

patients as (

    select * from {{ ref('dim_patients') }}

),

facilities as (

    select * from {{ ref('dim_facilities') }}

),

visit_conditions as (

    -- One row per visit and distinct condition named at it.
    select
        triage_visits.visit_date,
        facilities.state,
        {{ age_band(age_in_years('patients.birth_date', 'triage_visits.visit_date')) }} as age_band,
        coalesce(patients.sex, 'Unknown') as sex,
        visit_condition.condition_name,
        triage_visits.file_id
    from triage_visits
    inner join patients
        on triage_visits.patient_id = patients.patient_id
    inner join facilities
        on triage_visits.facility_id = facilities.facility_id
    cross join lateral (
        select distinct lower(condition_name) as condition_name
        from unnest(triage_visits.conditions) as named (condition_name)
    ) as visit_condition

),

final as (

    select
        visit_date,
        state,
        age_band,
        sex,
        condition_name,
        count(*) as visit_count,
        array_agg(distinct file_id order by file_id) as file_ids,
        cast('{{ run_started_at.isoformat() }}' as timestamptz) as built_at
    from visit_conditions
    group by 1, 2, 3, 4, 5

)

select * from final
