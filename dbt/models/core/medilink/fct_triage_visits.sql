{#
    One row per triage visit whose facility and patient names resolve to exactly one patient.
    Rows naming no patient, or a name shared by several, are left out (not guessed).

    Incremental (delete+insert on visit_date): a run rebuilds only the reporting days whose files changed
    since the last one (a new day, a re-delivered day, see reporting_days_filter), whole, so a
    superseded file's rows are replaced and ids are those a full build gives. Other days are not looked
    at again: a change in the dimensions (a name that becomes shared, a patient who appears late) reaches
    older days only with `dbt build --full-refresh`.
#}
{# Indexes: (day, id) for delete+insert and the API's pages in date order, (patient, day, id) for one patient's
   history page by page, file_id for finding the files not yet here (macros/incremental.sql),
   built_at for the tests that check the latest batch (macros/test_scope.sql); it came later than the
   fact, so new columns are appended (older rows have no built_at). #}
{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='visit_date',
        on_schema_change='append_new_columns',
        indexes=[
            {'columns': ['visit_date', 'triage_visit_id']},
            {'columns': ['patient_id', 'visit_date', 'triage_visit_id']},
            {'columns': ['file_id']},
            {'columns': ['built_at']},
        ],
        post_hook="{{ delete_rows_of_unloaded_files('medilink_triage_visits') }}",
    )
}}
{# The ledger is read only on incremental runs (reporting_days_filter, the post-hook): declared for dbt's ordering. #}
-- depends_on: {{ ref('stg_ops__file_ledger') }}

with

triage_visits as (

    select * from {{ ref('stg_medilink__triage_visits') }}
    {% if is_incremental() %}
    where {{ reporting_days_filter('medilink_triage_visits', 'visit_date') }}
    {% endif %}

),

facilities as (

    select * from {{ ref('dim_facilities') }}

),

patients as (

    select * from {{ ref('dim_patients') }}

),

resolved_triage_visits as (

    select
        facilities.facility_id,
        patients.patient_id,
        triage_visits.*
    from triage_visits
    inner join facilities
        on lower(triage_visits.facility_name) = lower(facilities.facility_name)
        and facilities.is_name_unique
    inner join patients
        on facilities.facility_id = patients.facility_id
        and lower(triage_visits.patient_first_name) = lower(patients.first_name)
        and lower(triage_visits.patient_last_name) = lower(patients.last_name)
        and patients.is_name_unique

),

numbered_triage_visits as (

    select
        *,
        -- Identical visits on the same day are kept apart by their ordinal, not by file or row number.
        row_number() over (
            partition by
                facility_id, patient_id, visit_date, triage_level, chief_complaint, vital_signs,
                conditions, recommendations
            order by file_id, source_row_number
        ) as duplicate_ordinal
    from resolved_triage_visits

),

final as (

    select
        {{ surrogate_key([
            'facility_id', 'patient_id', "to_char(visit_date, 'YYYY-MM-DD')", 'triage_level', 'chief_complaint',
            'vital_signs', 'conditions', 'recommendations', 'duplicate_ordinal',
        ]) }} as triage_visit_id,
        facility_id,
        patient_id,
        visit_date,
        triage_level,
        {{ triage_priority('triage_level') }} as priority,
        triage_level <= 2 as is_urgent,
        chief_complaint,
        vital_signs,
        {{ blood_pressure('vital_signs', 'systolic') }} as systolic_bp,
        {{ blood_pressure('vital_signs', 'diastolic') }} as diastolic_bp,
        {{ split_list('conditions') }} as conditions,
        {{ split_list('recommendations') }} as recommendations,
        file_id,
        source_row_number,
        cast('{{ run_started_at.isoformat() }}' as timestamptz) as built_at
    from numbered_triage_visits

)

select * from final
