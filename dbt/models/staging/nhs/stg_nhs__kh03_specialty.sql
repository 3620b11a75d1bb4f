{# One row per trust per consultant specialty of the `Occupied by Specialty` sheet of a loaded KH03 workbook. #}
with

specialty as (

    select * from {{ source('raw', 'nhs_kh03_specialty') }}

),

file_ledger as (

    select * from {{ source('ops', 'file_ledger') }}

),

current_specialty as (

    select specialty.*
    from specialty
    inner join file_ledger
        on specialty._file_id = file_ledger.file_id
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
        specialty_code,
        {{ squish('specialty_name') }} as specialty_name,
        occupied as beds_occupied,
        sheet_row,
        _loaded_at as loaded_at
    from current_specialty

)

select * from final
