{# One row per medical record row of a loaded Medilink file; record_date is the file's reporting day. #}
with

medical_records as (

    select * from {{ source('raw', 'medilink_medical_records') }}

),

file_ledger as (

    select * from {{ source('ops', 'file_ledger') }}

),

current_medical_records as (

    select
        medical_records.*,
        file_ledger.period_start
    from medical_records
    inner join file_ledger
        on medical_records._file_id = file_ledger.file_id
    where file_ledger.status = 'loaded'
        and file_ledger.drop_type = 'medilink_medical_records'

),

final as (

    select
        _file_id as file_id,
        _row_number as source_row_number,
        {{ squish('facility_name') }} as facility_name,
        {{ squish('patient_first_name') }} as patient_first_name,
        {{ squish('patient_last_name') }} as patient_last_name,
        -- The rows carry no date: a record belongs to the reporting day of the file it came in.
        period_start as record_date,
        {{ squish('record_type') }} as record_type,
        diagnosis,
        treatment,
        medications,
        notes,
        _loaded_at as loaded_at
    from current_medical_records

)

select * from final
