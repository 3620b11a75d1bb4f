{#
    One row per quarter with a loaded KH03 workbook: which sheets it had and how many trusts and regions
    reported. Feeds /api/v1/beds/periods (what the other bed marts can answer for).
#}
with

bed_occupancy as (

    select * from {{ ref('fct_bed_occupancy') }}

),

region_bed_occupancy as (

    select * from {{ ref('fct_region_bed_occupancy') }}

),

england_bed_occupancy as (

    select * from {{ ref('fct_england_bed_occupancy') }}

),

specialty_occupancy as (

    select * from {{ ref('fct_specialty_occupancy') }}

),

sheet_rows as (

    select financial_year, quarter, period_start, period_end, file_id, 'trust' as sheet, org_code as code
    from bed_occupancy
    union all
    select financial_year, quarter, period_start, period_end, file_id, 'region' as sheet, region_code as code
    from region_bed_occupancy
    union all
    select financial_year, quarter, period_start, period_end, file_id, 'england' as sheet, sector as code
    from england_bed_occupancy
    union all
    select financial_year, quarter, period_start, period_end, file_id, 'specialty' as sheet, org_code as code
    from specialty_occupancy

),

final as (

    -- One loaded workbook per quarter (a revised one supersedes the earlier): grouping by file_id too
    -- makes a second one break the primary key instead of being added up.
    select
        financial_year,
        quarter,
        period_start,
        period_end,
        file_id,
        bool_or(sheet = 'trust') as has_trust_sheet,
        bool_or(sheet = 'region') as has_region_sheet,
        bool_or(sheet = 'specialty') as has_specialty_sheet,
        cast(count(distinct code) filter (where sheet = 'trust') as integer) as trusts_reporting,
        cast(count(distinct code) filter (where sheet = 'region') as integer) as regions_reporting,
        cast('{{ run_started_at.isoformat() }}' as timestamptz) as built_at
    from sheet_rows
    group by 1, 2, 3, 4, 5

)

select * from final
