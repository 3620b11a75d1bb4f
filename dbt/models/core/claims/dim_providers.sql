{#
    One row per provider number seen on a current claim line as the rendering or the billing provider: the
    months it has claims in, how many claims and which payers. (Aetna sends a tax id where the others send an
    NPI: such a number is a provider here too.) Added up from int_provider_payer_months (per provider, payer and
    reporting month), which a night updates for the months it touched.
#}
with

provider_payer_months as (

    select * from {{ ref('int_provider_payer_months') }}
    where npi is not null

),

final as (

    select
        npi,
        cast(date_trunc('month', min(first_service_date)) as date) as first_claim_month,
        cast(date_trunc('month', max(last_service_date)) as date) as last_claim_month,
        -- A claim has one reporting month (its current version's file): its claims in each month add up.
        cast(sum(claim_count) as bigint) as claims,
        array_agg(distinct payer order by payer) as payers,
        cast('{{ run_started_at.isoformat() }}' as timestamptz) as built_at
    from provider_payer_months
    group by 1

)

select * from final
