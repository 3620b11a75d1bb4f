{#
    One row per rendering provider (NPI) per month of service: claims, members, billed / allowed / paid, the
    allowed-to-billed and paid-to-allowed ratios and the denial rate, over the current version of each claim.
    De-identified: counts under disclosure control, and a month whose claim count is withheld shows nothing else.
#}
with

claims as (

    select * from {{ ref('fct_claims') }}

),

monthly as (

    select
        rendering_npi,
        service_month,
        count(*) as claim_count,
        count(distinct member_key) as member_count,
        count(*) filter (where claim_status = 'denied') as denied_claim_count,
        sum(billed_amount) as billed_amount,
        sum(allowed_amount) as allowed_amount,
        sum(paid_amount) as paid_amount
    from claims
    where rendering_npi is not null
        and service_month is not null
    group by 1, 2

),

marked as (

    select
        *,
        {{ sdc_is_small('claim_count') }} as is_claim_count_suppressed,
        -- A part of a withheld group is withheld with it (zeros too).
        {{ sdc_is_small('claim_count') }} or {{ sdc_is_small('member_count') }} as is_member_count_suppressed,
        {{ sdc_is_small('claim_count') }} or {{ sdc_is_small('denied_claim_count') }}
            as is_denied_claim_count_suppressed
    from monthly

),

published as (

    select
        *,
        {{ sdc_publish('claim_count', 'is_claim_count_suppressed') }} as published_claim_count,
        {{ sdc_publish('member_count', 'is_member_count_suppressed') }} as published_member_count,
        {{ sdc_publish('denied_claim_count', 'is_denied_claim_count_suppressed') }} as published_denied_claim_count
    from marked

),

final as (

    select
        rendering_npi,
        service_month,
        published_claim_count as claim_count,
        published_member_count as member_count,
        published_denied_claim_count as denied_claim_count,
        case when not is_claim_count_suppressed then billed_amount end as billed_amount,
        case when not is_claim_count_suppressed then allowed_amount end as allowed_amount,
        case when not is_claim_count_suppressed then paid_amount end as paid_amount,
        case when not is_claim_count_suppressed then round(allowed_amount / nullif(billed_amount, 0), 4) end
            as allowed_to_billed_ratio,
        case when not is_claim_count_suppressed then round(paid_amount / nullif(allowed_amount, 0), 4) end
            as paid_to_allowed_ratio,
        -- From the published counts, so it says no more than they do.
        round(published_denied_claim_count::numeric / nullif(published_claim_count, 0), 4) as denial_rate,
        is_claim_count_suppressed,
        is_member_count_suppressed,
        is_denied_claim_count_suppressed,
        cast('{{ run_started_at.isoformat() }}' as timestamptz) as built_at
    from published

)

select * from final
