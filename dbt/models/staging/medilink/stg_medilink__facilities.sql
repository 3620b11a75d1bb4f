{# One row per facility row of a loaded Medilink facilities file; state and LGA in one spelling. #}
with

facilities as (

    select * from {{ source('raw', 'medilink_facilities') }}

),

file_ledger as (

    select * from {{ source('ops', 'file_ledger') }}

),

current_facilities as (

    select
        facilities.*,
        file_ledger.period_start
    from facilities
    inner join file_ledger
        on facilities._file_id = file_ledger.file_id
    where file_ledger.status = 'loaded'
        and file_ledger.drop_type = 'medilink_facilities'

),

final as (

    select
        _file_id as file_id,
        _row_number as source_row_number,
        {{ squish('name') }} as facility_name,
        {{ normalize_state('state') }} as state,
        initcap({{ squish('lga') }}) as lga,
        lat as latitude,
        lon as longitude,
        {{ squish('type') }} as facility_type,
        period_start as reported_date,
        _loaded_at as loaded_at
    from current_facilities

)

select * from final
