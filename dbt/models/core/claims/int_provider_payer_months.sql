{#
    One row per provider number on a current claim line (rendering or billing), payer and reporting month (of the
    file holding the claim's current version): the claims with such a line and the first and last day of service
    of those lines. dim_providers adds them up per provider (a claim has one reporting month, so the claims of its
    months add up). Plus one month row per reporting month (provider columns null) with the month's claims, the
    bookkeeping of the incremental build.

    Incremental (delete+insert on the reporting month): a build rebuilds the months whose claims changed since its
    last build (macros/claims_marts.sql, claim_months_to_rebuild; decision 0022's amendment). The reporting month, not
    the month of service: a night's files report on one month, and a re-send takes its claim out of one earlier
    month, where claims received late are of many months of service.
#}
{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='reporting_month',
        on_schema_change='fail',
        post_hook=["{{ delete_empty_claim_months() }}", "{{ analyze_this() }}"],
    )
}}
{%- set months = claim_months_to_rebuild(ref('fct_claims'), 'reporting_month') -%}
with

claims as (

    select payer, claim_id, reporting_month from {{ ref('fct_claims') }}
    where {{ in_claim_months(months, 'reporting_month') }}

),

claim_lines as (

    select
        claim_lines.payer,
        claim_lines.claim_id,
        claims.reporting_month,
        claim_lines.rendering_npi,
        claim_lines.billing_npi,
        claim_lines.service_from_date
    from claims
    inner join {{ ref('fct_claim_lines') }} as claim_lines
        on claims.payer = claim_lines.payer
        and claims.claim_id = claim_lines.claim_id

),

provider_lines as (

    select rendering_npi as npi, payer, reporting_month, claim_id, service_from_date
    from claim_lines
    where rendering_npi is not null
    union all
    select billing_npi as npi, payer, reporting_month, claim_id, service_from_date
    from claim_lines
    where billing_npi is not null

),

provider_payer_months as (

    select
        npi,
        payer,
        reporting_month,
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
        rebuilt_months.reporting_month,
        cast(null as bigint) as claim_count,
        cast(null as date) as first_service_date,
        cast(null as date) as last_service_date,
        count(claims.reporting_month) as month_claim_count
    from {{ claim_months_relation(months, 'reporting_month', 'claims') }} as rebuilt_months
    left join claims
        on rebuilt_months.reporting_month = claims.reporting_month
    group by rebuilt_months.reporting_month

),

final as (

    select *, cast('{{ run_started_at.isoformat() }}' as timestamptz) as built_at from provider_payer_months
    union all
    select *, cast('{{ run_started_at.isoformat() }}' as timestamptz) as built_at from month_rows

)

select * from final
