{# One row per landed file version in the ledger: its drop type, status and reporting day. #}
with

file_ledger as (

    select * from {{ source('ops', 'file_ledger') }}

),

final as (

    select
        file_id,
        drop_type,
        status,
        status = 'loaded' as is_loaded,
        period_start as reported_date,
        period_end as reported_end_date,
        superseded_by as superseded_by_file_id,
        finished_at
    from file_ledger

)

select * from final
