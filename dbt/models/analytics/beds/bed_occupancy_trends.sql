{#
    One row per level ('trust' or 'region') per code per quarter per sector: beds, occupancy rate, the
    change on the quarter before and on the same quarter a year before, and the 85% / 92% general-and-acute
    flags. Feeds /api/v1/beds/occupancy and BI.
#}
with

bed_occupancy as (

    select * from {{ ref('fct_bed_occupancy') }}

),

region_bed_occupancy as (

    select * from {{ ref('fct_region_bed_occupancy') }}

),

nhs_organisations as (

    select * from {{ ref('dim_nhs_organisations') }}

),

nhs_regions as (

    select * from {{ ref('dim_nhs_regions') }}

),

trust_occupancy as (

    select
        'trust' as level,
        bed_occupancy.org_code,
        nhs_organisations.org_name,
        bed_occupancy.region_code,
        nhs_regions.region_name,
        bed_occupancy.financial_year,
        bed_occupancy.quarter,
        bed_occupancy.period_start,
        bed_occupancy.period_end,
        bed_occupancy.sector,
        bed_occupancy.beds_available,
        bed_occupancy.beds_occupied,
        bed_occupancy.occupancy_rate,
        bed_occupancy.file_id
    from bed_occupancy
    left join nhs_organisations
        on bed_occupancy.org_code = nhs_organisations.org_code
    left join nhs_regions
        on bed_occupancy.region_code = nhs_regions.region_code

),

region_occupancy as (

    -- As the Region by Sector sheet published it, so quarters without a trust sheet are here too.
    select
        'region' as level,
        region_bed_occupancy.region_code as org_code,
        nhs_regions.region_name as org_name,
        region_bed_occupancy.region_code,
        nhs_regions.region_name,
        region_bed_occupancy.financial_year,
        region_bed_occupancy.quarter,
        region_bed_occupancy.period_start,
        region_bed_occupancy.period_end,
        region_bed_occupancy.sector,
        region_bed_occupancy.beds_available,
        region_bed_occupancy.beds_occupied,
        region_bed_occupancy.occupancy_rate,
        region_bed_occupancy.file_id
    from region_bed_occupancy
    left join nhs_regions
        on region_bed_occupancy.region_code = nhs_regions.region_code

),

occupancy as (

    select * from trust_occupancy
    union all
    select * from region_occupancy

),

final as (

    select
        occupancy.level,
        occupancy.org_code,
        occupancy.org_name,
        occupancy.region_code,
        occupancy.region_name,
        occupancy.financial_year,
        occupancy.quarter,
        occupancy.period_start,
        occupancy.period_end,
        occupancy.sector,
        occupancy.beds_available,
        occupancy.beds_occupied,
        occupancy.occupancy_rate,
        previous_quarter.occupancy_rate as previous_quarter_rate,
        occupancy.occupancy_rate - previous_quarter.occupancy_rate as quarter_on_quarter_change,
        previous_year.occupancy_rate as previous_year_rate,
        occupancy.occupancy_rate - previous_year.occupancy_rate as year_on_year_change,
        -- NHS England's thresholds concern general and acute beds: 85% is the level above which bed
        -- management is said to suffer, 92% the planning ceiling. Strictly above; other sectors get null.
        case when occupancy.sector = 'General & Acute' then occupancy.occupancy_rate > 0.85 end as is_above_85_pct,
        case when occupancy.sector = 'General & Acute' then occupancy.occupancy_rate > 0.92 end as is_above_92_pct,
        occupancy.file_id,
        cast('{{ run_started_at.isoformat() }}' as timestamptz) as built_at
    from occupancy
    -- The quarter before and the same quarter a year before, found by date: a quarter that is not loaded
    -- gives nulls, never the row before it; Q4 (January) is followed by Q1 (April) of the next year.
    left join occupancy as previous_quarter
        on occupancy.level = previous_quarter.level
        and occupancy.org_code = previous_quarter.org_code
        and occupancy.sector = previous_quarter.sector
        and previous_quarter.period_start = cast(occupancy.period_start - interval '3 months' as date)
    left join occupancy as previous_year
        on occupancy.level = previous_year.level
        and occupancy.org_code = previous_year.org_code
        and occupancy.sector = previous_year.sector
        and previous_year.period_start = cast(occupancy.period_start - interval '1 year' as date)

)

select * from final
