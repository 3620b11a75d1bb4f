{#
    One row per trust (or England) per sector of the `NHS Trust by Sector` sheet of a loaded KH03 workbook.
    Bed counts are daily averages with decimals, kept as published.
#}
with

trust_sector as (

    select * from {{ source('raw', 'nhs_kh03_trust_sector') }}

),

file_ledger as (

    select * from {{ source('ops', 'file_ledger') }}

),

current_trust_sector as (

    select trust_sector.*
    from trust_sector
    inner join file_ledger
        on trust_sector._file_id = file_ledger.file_id
    where file_ledger.status = 'loaded'
        and file_ledger.drop_type = 'nhs_kh03_overnight'

),

final as (

    select
        _file_id as file_id,
        _row_number as source_row_number,
        financial_year,
        quarter,
        period_start,
        period_end,
        upper(org_code) as org_code,
        {{ squish('org_name') }} as org_name,
        upper(region_code) as region_code,
        sector,
        available as beds_available,
        occupied as beds_occupied,
        pct_occupied as pct_occupied_published,
        is_england,
        sheet_row,
        _loaded_at as loaded_at
    from current_trust_sector

)

select * from final
