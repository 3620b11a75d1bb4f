{#
    One row per quarter per sector: the England row as published beside the sums of the trust rows, which
    must agree with it within rounding. Feeds /api/v1/beds/national.
#}
with

england_bed_occupancy as (

    select * from {{ ref('fct_england_bed_occupancy') }}

),

bed_occupancy as (

    select * from {{ ref('fct_bed_occupancy') }}

),

trust_totals as (

    select
        financial_year,
        quarter,
        sector,
        sum(beds_available) as trust_beds_available,
        sum(beds_occupied) as trust_beds_occupied,
        cast(count(distinct org_code) as integer) as trusts_reporting
    from bed_occupancy
    group by 1, 2, 3

),

final as (

    select
        england_bed_occupancy.financial_year,
        england_bed_occupancy.quarter,
        england_bed_occupancy.period_start,
        england_bed_occupancy.period_end,
        england_bed_occupancy.sector,
        england_bed_occupancy.beds_available,
        england_bed_occupancy.beds_occupied,
        england_bed_occupancy.occupancy_rate,
        -- Null when the quarter's workbook had no trust sheet (a region-only workbook).
        trust_totals.trust_beds_available,
        trust_totals.trust_beds_occupied,
        coalesce(trust_totals.trusts_reporting, 0) as trusts_reporting,
        england_bed_occupancy.file_id,
        cast('{{ run_started_at.isoformat() }}' as timestamptz) as built_at
    from england_bed_occupancy
    left join trust_totals
        on england_bed_occupancy.financial_year = trust_totals.financial_year
        and england_bed_occupancy.quarter = trust_totals.quarter
        and england_bed_occupancy.sector = trust_totals.sector

)

select * from final
