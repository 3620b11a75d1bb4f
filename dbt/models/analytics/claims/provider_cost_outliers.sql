{#
    One row per rendering provider (NPI) and procedure code: the provider's allowed cost per claim for the
    procedure against every provider billing it (its peers, itself included): peer median, MAD, robust z-score
    and percentile. No verdict (z, percentile, peer figures null) when fewer than var('claims_min_peer_count')
    providers bill the procedure. Rules: docs/claims-anomaly-rules.md (rule cost_outlier). The claims and
    allowed amounts per provider and procedure are kept per reporting month in int_provider_procedure_months,
    which a night updates for the months it touched; the peer figures are recomputed from them here.
#}
{%- set min_peers = var('claims_min_peer_count') | int -%}
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

peer_medians as (

    select
        procedure_code,
        count(*) as peer_provider_count,
        cast(percentile_cont(0.5) within group (order by allowed_per_claim) as numeric) as peer_median
    from provider_procedures
    group by 1

),

deviations as (

    select
        provider_procedures.*,
        peer_medians.peer_provider_count,
        peer_medians.peer_median,
        abs(provider_procedures.allowed_per_claim - peer_medians.peer_median) as absolute_deviation
    from provider_procedures
    inner join peer_medians
        on provider_procedures.procedure_code = peer_medians.procedure_code

),

peer_spreads as (

    select
        procedure_code,
        cast(percentile_cont(0.5) within group (order by absolute_deviation) as numeric) as peer_mad,
        avg(absolute_deviation) as peer_mean_absolute_deviation
    from deviations
    group by 1

),

scored as (

    select
        deviations.*,
        peer_spreads.peer_mad,
        peer_spreads.peer_mean_absolute_deviation,
        deviations.peer_provider_count >= {{ min_peers }} as has_verdict,
        -- Iglewicz and Hoaglin's modified z-score. When more than half the peers cost the same, MAD is 0 and
        -- the z-score undefined: the mean absolute deviation stands in, scaled by 1.253314 (sqrt(pi / 2), its
        -- ratio to the standard deviation of a normal distribution, as 0.6745 is the MAD's). When that is 0 too,
        -- every peer costs the median and so does this provider: z = 0.
        case
            when peer_spreads.peer_mad > 0 then 'mad'
            when peer_spreads.peer_mean_absolute_deviation > 0 then 'mean_absolute_deviation'
            else 'no_spread'
        end as spread_method,
        case
            when peer_spreads.peer_mad > 0
                then 0.6745 * (deviations.allowed_per_claim - deviations.peer_median) / peer_spreads.peer_mad
            when peer_spreads.peer_mean_absolute_deviation > 0
                then (deviations.allowed_per_claim - deviations.peer_median)
                    / (1.253314 * peer_spreads.peer_mean_absolute_deviation)
            else 0
        end as robust_z,
        percent_rank() over (partition by deviations.procedure_code order by deviations.allowed_per_claim)
            as cost_percentile
    from deviations
    inner join peer_spreads
        on deviations.procedure_code = peer_spreads.procedure_code

),

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
