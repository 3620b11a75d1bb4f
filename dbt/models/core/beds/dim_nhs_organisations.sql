{#
    One row per NHS trust (org code) that any loaded KH03 workbook names, on its trust or specialty sheet:
    the name and region code of the latest quarter, and the quarters it was seen in.
#}
with

trust_sector as (

    select * from {{ ref('stg_nhs__kh03_trust_sector') }}

),

specialty as (

    select * from {{ ref('stg_nhs__kh03_specialty') }}

),

trust_quarters as (

    -- The trust sheet first: when a quarter has both sheets, its name and region come from there.
    select distinct
        org_code,
        org_name,
        region_code,
        period_start,
        period_end,
        file_id,
        1 as sheet_order
    from trust_sector
    where not is_england

    union all

    select distinct
        org_code,
        org_name,
        region_code,
        period_start,
        period_end,
        file_id,
        2 as sheet_order
    from specialty

),

ranked_trust_quarters as (

    select
        *,
        row_number() over (
            partition by org_code
            order by period_start desc, sheet_order, file_id desc
        ) as recency_rank,
        min(period_start) over (partition by org_code) as first_period_start,
        max(period_end) over (partition by org_code) as last_period_end
    from trust_quarters

),

final as (

    select
        org_code,
        org_name,
        region_code,
        first_period_start,
        last_period_end,
        file_id,
        cast('{{ run_started_at.isoformat() }}' as timestamptz) as built_at
    from ranked_trust_quarters
    where recency_rank = 1

)

select * from final
