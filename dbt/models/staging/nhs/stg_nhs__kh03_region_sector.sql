{#
    One row per region (or England) per sector of the `Region by Sector` sheet of a loaded KH03 workbook.
    Region names are as published that quarter (they drift between years); codes are stable.
#}
with

region_sector as (

    select * from {{ source('raw', 'nhs_kh03_region_sector') }}

),

file_ledger as (

    select * from {{ source('ops', 'file_ledger') }}

),

current_region_sector as (

    select region_sector.*
    from region_sector
    inner join file_ledger
        on region_sector._file_id = file_ledger.file_id
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
        upper(region_code) as region_code,
        {{ squish('region_name') }} as region_name,
        sector,
        available as beds_available,
        occupied as beds_occupied,
        pct_occupied as pct_occupied_published,
        is_england,
        sheet_row,
        _loaded_at as loaded_at
    from current_region_sector

)

select * from final
