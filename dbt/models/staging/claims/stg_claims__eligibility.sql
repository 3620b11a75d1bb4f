{#
    One row per valid enrolment span of every loaded eligibility file (every arrival; dbt/models/core/claims keeps
    each member's spans from the latest file that sent the member). The payer is the key's provider= folder.
#}
with

eligibility as (

    select * from {{ source('raw', 'eligibility') }}

),

file_ledger as (

    select * from {{ source('ops', 'file_ledger') }}

),

loaded_spans as (

    select
        eligibility.*,
        file_ledger.key,
        file_ledger.layout,
        file_ledger.period_start,
        file_ledger.period_end
    from eligibility
    inner join file_ledger
        on eligibility._file_id = file_ledger.file_id
    where file_ledger.status = 'loaded'
        and file_ledger.drop_type = 'eligibility'

),

final as (

    select
        _file_id as file_id,
        _row_number as source_row_number,
        _loaded_at as loaded_at,
        period_start as reporting_month,
        substring(key from '/provider=([^/]+)/') as payer,
        layout,
        member_id,
        coalesce(plan, 'unspecified') as plan,
        case
            when lower(sex) in ('f', 'female') then 'female'
            when lower(sex) in ('m', 'male') then 'male'
            when sex is not null then 'other or unknown'
        end as sex,
        birth_date,
        enrollment_start_date,
        -- No end: still enrolled, as far as the file knows, to the end of the month it reports on.
        coalesce(enrollment_end_date, period_end) as enrollment_end_date,
        enrollment_end_date is null as is_open_ended
    from loaded_spans

)

select * from final
