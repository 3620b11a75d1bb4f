{#
    KH03: for every quarter and sector whose workbook had a trust sheet, the trusts' beds available and
    occupied add up to the published England row within rounding: 0.5 bed per trust summed (the loader's
    tolerance; each trust's figure is rounded in the workbook). Read from the core facts, apart from the
    arithmetic of bed_occupancy_national. Returns a row per quarter and sector that does not add up, or
    whose England row is missing.
#}
with

bed_occupancy as (

    select * from {{ ref('fct_bed_occupancy') }}

),

england_bed_occupancy as (

    select * from {{ ref('fct_england_bed_occupancy') }}

),

trust_totals as (

    select
        financial_year,
        quarter,
        sector,
        count(*) as trust_rows,
        sum(beds_available) as beds_available,
        sum(beds_occupied) as beds_occupied
    from bed_occupancy
    group by 1, 2, 3

),

final as (

    select
        trust_totals.financial_year,
        trust_totals.quarter,
        trust_totals.sector,
        trust_totals.trust_rows,
        trust_totals.beds_available as trust_beds_available,
        england_bed_occupancy.beds_available as england_beds_available,
        trust_totals.beds_occupied as trust_beds_occupied,
        england_bed_occupancy.beds_occupied as england_beds_occupied
    from trust_totals
    left join england_bed_occupancy
        on trust_totals.financial_year = england_bed_occupancy.financial_year
        and trust_totals.quarter = england_bed_occupancy.quarter
        and trust_totals.sector = england_bed_occupancy.sector
    where england_bed_occupancy.sector is null
        or abs(trust_totals.beds_available - england_bed_occupancy.beds_available) > 0.5 * trust_totals.trust_rows
        or abs(trust_totals.beds_occupied - england_bed_occupancy.beds_occupied) > 0.5 * trust_totals.trust_rows

)

select * from final
