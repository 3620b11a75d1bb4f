{# One row per triage visit row of a loaded Medilink file; visit_date is the file's reporting day. #}
with

triage_visits as (

    select * from {{ source('raw', 'medilink_triage_visits') }}

),

file_ledger as (

    select * from {{ source('ops', 'file_ledger') }}

),

current_triage_visits as (

    select
        triage_visits.*,
        file_ledger.period_start
    from triage_visits
    inner join file_ledger
        on triage_visits._file_id = file_ledger.file_id
    where file_ledger.status = 'loaded'
        and file_ledger.drop_type = 'medilink_triage_visits'

),

final as (

    select
        _file_id as file_id,
        _row_number as source_row_number,
        {{ squish('facility_name') }} as facility_name,
        {{ squish('patient_first_name') }} as patient_first_name,
        {{ squish('patient_last_name') }} as patient_last_name,
        -- The rows carry no date: a visit belongs to the reporting day of the file it came in.
        period_start as visit_date,
        cast(triage_level as integer) as triage_level,
        chief_complaint,
        vital_signs,
        conditions,
        recommendations,
        _loaded_at as loaded_at
    from current_triage_visits

)

select * from final
