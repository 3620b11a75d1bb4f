{# One row per patient row of a loaded Medilink patients file; sex upper-cased. #}
with

patients as (

    select * from {{ source('raw', 'medilink_patients') }}

),

file_ledger as (

    select * from {{ source('ops', 'file_ledger') }}

),

current_patients as (

    select
        patients.*,
        file_ledger.period_start
    from patients
    inner join file_ledger
        on patients._file_id = file_ledger.file_id
    where file_ledger.status = 'loaded'
        and file_ledger.drop_type = 'medilink_patients'

),

final as (

    select
        _file_id as file_id,
        _row_number as source_row_number,
        {{ squish('facility_name') }} as facility_name,
        {{ squish('first_name') }} as first_name,
        {{ squish('last_name') }} as last_name,
        upper(trim(sex)) as sex,
        dob as birth_date,
        {{ squish('phone') }} as phone_number,
        period_start as reported_date,
        _loaded_at as loaded_at
    from current_patients

)

select * from final
