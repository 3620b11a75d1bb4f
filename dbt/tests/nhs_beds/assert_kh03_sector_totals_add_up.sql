{#
    KH03: a trust's Total is the sum of its four sectors (General & Acute, Learning Disabilities, Maternity,
    Mental Illness) within 0.5 bed, for beds available and occupied, in every quarter; and so is a
    region's. Returns the trust or region quarters that do not add up or lack a sector.
#}
with

bed_occupancy as (

    select * from {{ ref('fct_bed_occupancy') }}

),

region_bed_occupancy as (

    select * from {{ ref('fct_region_bed_occupancy') }}

),

sector_rows as (

    select 'trust' as level, org_code as code, financial_year, quarter, sector, beds_available, beds_occupied
    from bed_occupancy
    union all
    select 'region' as level, region_code as code, financial_year, quarter, sector, beds_available, beds_occupied
    from region_bed_occupancy

),

totals as (

    select
        level,
        code,
        financial_year,
        quarter,
        count(*) as sector_rows,
        sum(beds_available) filter (where sector = 'Total') as total_available,
        sum(beds_available) filter (where sector <> 'Total') as sectors_available,
        sum(beds_occupied) filter (where sector = 'Total') as total_occupied,
        sum(beds_occupied) filter (where sector <> 'Total') as sectors_occupied
    from sector_rows
    group by 1, 2, 3, 4

),

final as (

    select * from totals
    where sector_rows <> 5
        or abs(total_available - sectors_available) > 0.5
        or abs(total_occupied - sectors_occupied) > 0.5

)

select * from final
