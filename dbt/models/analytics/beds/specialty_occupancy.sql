{#
    One row per trust per quarter per consultant specialty: beds occupied and the specialty's share of the
    trust's occupied beds summed over its specialties. Feeds /api/v1/beds/specialties.
#}
with

specialty_occupancy as (

    select * from {{ ref('fct_specialty_occupancy') }}

),

nhs_organisations as (

    select * from {{ ref('dim_nhs_organisations') }}

),

nhs_regions as (

    select * from {{ ref('dim_nhs_regions') }}

),

trust_shares as (

    select
        *,
        sum(beds_occupied) over (partition by org_code, financial_year, quarter) as trust_beds_occupied
    from specialty_occupancy

),

final as (

    select
        trust_shares.org_code,
        nhs_organisations.org_name,
        trust_shares.region_code,
        nhs_regions.region_name,
        trust_shares.financial_year,
        trust_shares.quarter,
        trust_shares.period_start,
        trust_shares.period_end,
        trust_shares.specialty_code,
        trust_shares.specialty_name,
        trust_shares.beds_occupied,
        trim_scale(trust_shares.beds_occupied / nullif(trust_shares.trust_beds_occupied, 0))
            as share_of_trust_occupied,
        trust_shares.file_id,
        cast('{{ run_started_at.isoformat() }}' as timestamptz) as built_at
    from trust_shares
    left join nhs_organisations
        on trust_shares.org_code = nhs_organisations.org_code
    left join nhs_regions
        on trust_shares.region_code = nhs_regions.region_code

)

select * from final
