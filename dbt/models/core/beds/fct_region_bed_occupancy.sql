{#
    One row per NHS England region per quarter per sector, as the `Region by Sector` sheet published it
    (also for quarters whose workbook has no trust sheet).
#}
with

region_sector as (

    select * from {{ ref('stg_nhs__kh03_region_sector') }}

),

final as (

    select
        region_code,
        financial_year,
        quarter,
        period_start,
        period_end,
        region_name,
        sector,
        beds_available,
        beds_occupied,
        trim_scale(beds_occupied / nullif(beds_available, 0)) as occupancy_rate,
        pct_occupied_published,
        file_id,
        cast('{{ run_started_at.isoformat() }}' as timestamptz) as built_at
    from region_sector
    where not is_england

)

select * from final
