{#
    One row per medical record whose facility and patient names resolve to exactly one patient.
    Rows naming no patient, or a name shared by several, are left out (not guessed).

    Incremental (delete+insert on record_date): a run rebuilds only the reporting days whose files changed
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
        unique_key='record_date',
        on_schema_change='append_new_columns',
        indexes=[
            {'columns': ['record_date', 'medical_record_id']},
            {'columns': ['patient_id', 'record_date', 'medical_record_id']},
            {'columns': ['file_id']},
            {'columns': ['built_at']},
        ],
        post_hook="{{ delete_rows_of_unloaded_files('medilink_medical_records') }}",
    )
}}
{# The ledger is read only on incremental runs (reporting_days_filter, the post-hook): declared for dbt's ordering. #}
-- depends_on: {{ ref('stg_ops__file_ledger') }}

with

medical_records as (

    select * from {{ ref('stg_medilink__medical_records') }}
    {% if is_incremental() %}
    where {{ reporting_days_filter('medilink_medical_records', 'record_date') }}
    {% endif %}

),

facilities as (

    select * from {{ ref('dim_facilities') }}

),

patients as (

    select * from {{ ref('dim_patients') }}

),

resolved_medical_records as (

    select
        facilities.facility_id,
        patients.patient_id,
        medical_records.*
    from medical_records
    inner join facilities
        on lower(medical_records.facility_name) = lower(facilities.facility_name)
        and facilities.is_name_unique
    inner join patients
        on facilities.facility_id = patients.facility_id
        and lower(medical_records.patient_first_name) = lower(patients.first_name)
        and lower(medical_records.patient_last_name) = lower(patients.last_name)
        and patients.is_name_unique

),

numbered_medical_records as (

    select
        *,
        -- Identical records on the same day are kept apart by their ordinal, not by file or row number.
        row_number() over (
            partition by
                facility_id, patient_id, record_date, record_type, diagnosis, treatment, medications, notes
            order by file_id, source_row_number
        ) as duplicate_ordinal
    from resolved_medical_records

),

final as (

    select
        {{ surrogate_key([
            'facility_id', 'patient_id', "to_char(record_date, 'YYYY-MM-DD')", 'record_type', 'diagnosis',
            'treatment', 'medications', 'notes', 'duplicate_ordinal',
        ]) }} as medical_record_id,
        facility_id,
        patient_id,
        record_date,
        record_type,
        diagnosis,
        treatment,
        medications,
        notes,
        file_id,
        source_row_number,
        cast('{{ run_started_at.isoformat() }}' as timestamptz) as built_at
    from numbered_medical_records

)

select * from final
