{#
    One row per quarter per sector: the England row as published, from the trust sheet, or from the region
    sheet when the workbook has no trust sheet (the loader stores it once per workbook, in one of the two).
#}
with

trust_sector as (

    select * from {{ ref('stg_nhs__kh03_trust_sector') }}

),

region_sector as (

    select * from {{ ref('stg_nhs__kh03_region_sector') }}

),

england_rows as (

    select
        financial_year,
        quarter,
        period_start,
        period_end,
        sector,
        beds_available,
        beds_occupied,
        pct_occupied_published,
        'NHS Trust by Sector' as source_sheet,
        file_id
    from trust_sector
    where is_england

    union all

    select
        financial_year,
        quarter,
        period_start,
        period_end,
        sector,
        beds_available,
        beds_occupied,
        pct_occupied_published,
        'Region by Sector' as source_sheet,
        file_id
    from region_sector
    where is_england

),

final as (

    select
        financial_year,
        quarter,
        period_start,
        period_end,
        sector,
        beds_available,
        beds_occupied,
        trim_scale(beds_occupied / nullif(beds_available, 0)) as occupancy_rate,
        pct_occupied_published,
        source_sheet,
        file_id,
        cast('{{ run_started_at.isoformat() }}' as timestamptz) as built_at
    from england_rows

)

select * from final
