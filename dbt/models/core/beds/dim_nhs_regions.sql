{#
    One row per NHS England region code seen in a loaded KH03 workbook, on the region sheet or as a
    trust's region. The name is the latest one the region sheet published (names drift between years,
    codes do not); null for a code no region sheet has named.
#}
with

region_sector as (

    select * from {{ ref('stg_nhs__kh03_region_sector') }}

),

trust_sector as (

    select * from {{ ref('stg_nhs__kh03_trust_sector') }}

),

specialty as (

    select * from {{ ref('stg_nhs__kh03_specialty') }}

),

region_quarters as (

    select distinct
        region_code,
        region_name,
        period_start,
        period_end,
        file_id
    from region_sector
    where not is_england

    union all

    -- Trusts' region codes: they name no region, but a code may be missing from the region sheets loaded.
    select distinct
        region_code,
        cast(null as text) as region_name,
        period_start,
        period_end,
        file_id
    from trust_sector
    where not is_england
        and region_code is not null

    union all

    select distinct
        region_code,
        cast(null as text) as region_name,
        period_start,
        period_end,
        file_id
    from specialty
    where region_code is not null

),

ranked_region_quarters as (

    select
        *,
        row_number() over (
            partition by region_code
            order by region_name is null, period_start desc, file_id desc
        ) as recency_rank,
        min(period_start) over (partition by region_code) as first_period_start,
        max(period_end) over (partition by region_code) as last_period_end
    from region_quarters

),

final as (

    select
        region_code,
        region_name,
        first_period_start,
        last_period_end,
        cast('{{ run_started_at.isoformat() }}' as timestamptz) as built_at
    from ranked_region_quarters
    where recency_rank = 1

)

select * from final
