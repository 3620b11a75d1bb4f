{#
    KH03: one loaded workbook per quarter. A revised workbook supersedes the earlier one for its quarter in
    the ledger, so staging never holds two files for a quarter; if it did, every figure of that quarter
    would count twice. Returns the quarters with more than one loaded file.
#}
with

trust_sector as (

    select * from {{ ref('stg_nhs__kh03_trust_sector') }}

),

region_sector as (

    select * from {{ ref('stg_nhs__kh03_region_sector') }}

),

specialty as (

    select * from {{ ref('stg_nhs__kh03_specialty') }}

),

loaded_files as (

    select distinct financial_year, quarter, file_id from trust_sector
    union
    select distinct financial_year, quarter, file_id from region_sector
    union
    select distinct financial_year, quarter, file_id from specialty

),

final as (

    select
        financial_year,
        quarter,
        array_agg(file_id order by file_id) as file_ids
    from loaded_files
    group by 1, 2
    having count(*) > 1

)

select * from final
