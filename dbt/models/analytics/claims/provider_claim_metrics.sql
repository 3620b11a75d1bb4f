{#
    One row per rendering provider (NPI) per month of service: claims, members, billed / allowed / paid, the
    allowed-to-billed and paid-to-allowed ratios and the denial rate, over the current version of each claim.
    Kept per month in int_provider_months, which a night updates for the months it touched.
    De-identified: counts under disclosure control, and a month whose claim count is withheld shows nothing else.
#}
with

provider_months as (

    select * from {{ ref('int_provider_months') }}

),

-- The provider rows (the month rows keep the incremental build's bookkeeping).
monthly as (

    select
        rendering_npi,
        service_month,
        claim_count,
        member_count,
        denied_claim_count,
        billed_amount,
        allowed_amount,
        paid_amount
    from provider_months
    where rendering_npi is not null

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
