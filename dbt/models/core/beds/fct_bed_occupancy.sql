{#
    One row per trust per quarter per sector: average daily beds available and occupied, and the
    occupancy rate worked out from them (the published % Occupied kept beside it).
#}
with

trust_sector as (

    select * from {{ ref('stg_nhs__kh03_trust_sector') }}

),

final as (

    select
        org_code,
        financial_year,
        quarter,
        period_start,
        period_end,
        region_code,
        sector,
        beds_available,
        beds_occupied,
        -- Not rounded (trim_scale drops trailing zeros only); no beds, no rate.
        trim_scale(beds_occupied / nullif(beds_available, 0)) as occupancy_rate,
        pct_occupied_published,
        file_id,
        cast('{{ run_started_at.isoformat() }}' as timestamptz) as built_at
    from trust_sector
    where not is_england

)

select * from final
