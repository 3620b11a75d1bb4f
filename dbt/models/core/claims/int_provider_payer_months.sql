{#
    One row per provider number on a current claim line (rendering or billing), payer and month of service (the
    claim's, fct_claims): the claims with such a line and the first and last day of service of those lines.
    dim_providers adds them up per provider (a claim has one month, so the claims of its months add up). Plus one
    month row per month of service (provider columns null) with the month's claims, the bookkeeping of the
    incremental build.

    Incremental (delete+insert on the month): a build rebuilds the months whose claims changed since its last
    build (macros/claims_marts.sql, claim_months_filter; decision 0022's amendment).
#}
{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='service_month',
        on_schema_change='fail',
        post_hook=["{{ analyze_this() }}"],
    )
}}
with

claims as (

    select payer, claim_id, service_month from {{ ref('fct_claims') }}
    where {{ claim_months_filter(ref('fct_claims')) }}

),

claim_lines as (

    select
        claims.service_month,
        claim_lines.*
    from claims
    inner join {{ ref('fct_claim_lines') }} as claim_lines
        on claims.payer = claim_lines.payer
        and claims.claim_id = claim_lines.claim_id

),

provider_lines as (

    select rendering_npi as npi, payer, service_month, claim_id, service_from_date
    from claim_lines
    where rendering_npi is not null
    union all
    select billing_npi as npi, payer, service_month, claim_id, service_from_date
    from claim_lines
    where billing_npi is not null

),

provider_payer_months as (

    select
        npi,
        payer,
        service_month,
        count(distinct claim_id) as claim_count,
        min(service_from_date) as first_service_date,
        max(service_from_date) as last_service_date,
        cast(null as bigint) as month_claim_count
    from provider_lines
    group by 1, 2, 3

),

month_rows as (

    select
        cast(null as text) as npi,
        cast(null as text) as payer,
        service_month,
        cast(null as bigint) as claim_count,
        cast(null as date) as first_service_date,
        cast(null as date) as last_service_date,
        count(*) as month_claim_count
    from claims
    group by 3

),

final as (

    select *, cast('{{ run_started_at.isoformat() }}' as timestamptz) as built_at from provider_payer_months
    union all
    select *, cast('{{ run_started_at.isoformat() }}' as timestamptz) as built_at from month_rows

)

select * from final
