{#
    One row per rendering provider (NPI) and procedure code: the provider's allowed cost per claim for the
    procedure against every provider billing it (its peers, itself included): peer median, MAD, robust z-score
    and percentile. No verdict (z, percentile, peer figures null) when fewer than var('claims_min_peer_count')
    providers bill the procedure. Rules: docs/claims-anomaly-rules.md (rule cost_outlier). The claims and
    allowed amounts per provider and procedure are kept per reporting month in int_provider_procedure_months,
    which a night updates for the months it touched; the peer figures are recomputed from them here.
#}
with

provider_procedure_months as (

    select * from {{ ref('int_provider_procedure_months') }}

),

-- A provider's claims of the procedure and their allowed amounts, added up over its months (the month rows,
-- with null providers, keep the incremental build's bookkeeping).
provider_procedures as (

    select
        rendering_npi,
        procedure_code,
        cast(sum(claim_count) as bigint) as claim_count,
        sum(allowed_amount) / sum(claim_count) as allowed_per_claim
    from provider_procedure_months
    where rendering_npi is not null
    group by 1, 2

),

{{ cost_peer_ctes('scored', 'provider_procedures') }},

marked as (

    select
        *,
        {{ sdc_is_small('claim_count') }} as is_claim_count_suppressed
    from scored

),

final as (

    select
        rendering_npi,
        procedure_code,
        {{ sdc_publish('claim_count', 'is_claim_count_suppressed') }} as claim_count,
        round(allowed_per_claim, 2) as allowed_per_claim,
        cast(peer_provider_count as integer) as peer_provider_count,
        has_verdict,
        case when has_verdict then round(peer_median, 2) end as peer_median_allowed_per_claim,
        case when has_verdict then round(peer_mad, 2) end as peer_mad,
        case when has_verdict then spread_method end as spread_method,
        case when has_verdict then round(robust_z, 4) end as robust_z,
        case when has_verdict then round(cast(cost_percentile as numeric), 4) end as cost_percentile,
        case when has_verdict then robust_z > {{ var('claims_outlier_z') }} end as is_high_cost_outlier,
        is_claim_count_suppressed,
        cast('{{ run_started_at.isoformat() }}' as timestamptz) as built_at
    from marked

)

select * from final
