{# One row per patient row of a loaded Medilink patients file; sex upper-cased, phone checked, age on the file's day. #}
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
        {{ nigerian_phone('phone') }} as phone_number_e164,
        {{ nigerian_phone('phone') }} is not null as is_phone_valid,
        {{ age_in_years('dob', 'period_start') }} as age_years,
        {{ age_band(age_in_years('dob', 'period_start')) }} as age_band,
        period_start as reported_date,
        _loaded_at as loaded_at
    from current_patients

)

select * from final
