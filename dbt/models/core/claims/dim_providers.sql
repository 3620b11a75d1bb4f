{#
    One row per provider number seen on a current claim line as the rendering or the billing provider: the
    months it has claims in, how many claims and which payers. (Aetna sends a tax id where the others send an
    NPI: such a number is a provider here too.)
#}
with

claim_lines as (

    select * from {{ ref('fct_claim_lines') }}

),

provider_lines as (

    select rendering_npi as npi, payer, claim_id, service_from_date from claim_lines where rendering_npi is not null
    union all
    select billing_npi as npi, payer, claim_id, service_from_date from claim_lines where billing_npi is not null

),

final as (

    select
        npi,
        cast(date_trunc('month', min(service_from_date)) as date) as first_claim_month,
        cast(date_trunc('month', max(service_from_date)) as date) as last_claim_month,
        count(distinct (payer, claim_id)) as claims,
        array_agg(distinct payer order by payer) as payers,
        cast('{{ run_started_at.isoformat() }}' as timestamptz) as built_at
    from provider_lines
    group by 1

)

select * from final
