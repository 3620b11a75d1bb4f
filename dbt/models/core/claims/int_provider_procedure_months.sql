{#
    One row per rendering provider (NPI), procedure code and reporting month (of the file holding the claim's
    current version) of the current claims that are not denied: the claims with a line of the procedure from the
    provider and the sum of those lines' allowed amounts, per claim (lines without an allowed amount left out).
    provider_cost_outliers adds them up per provider and procedure. Plus one month row per reporting month (provider
    columns null) with the month's claims, the bookkeeping of the incremental build.

    Incremental (delete+insert on the reporting month): a build rebuilds the months whose claims changed since its
    last build (macros/claims_marts.sql, claim_months_to_rebuild; decision 0022's amendment), as int_provider_payer_months.
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

    select * from {{ ref('fct_claim_lines') }}

),

-- A claim's allowed amount for the procedure (its lines with that code); denied claims cost nothing and are
-- left out, so that they do not pull a provider's cost per claim down.
claim_procedures as (

    select
        claim_lines.rendering_npi,
        claim_lines.procedure_code,
        claims.reporting_month,
        claim_lines.payer,
        claim_lines.claim_id,
        sum(claim_lines.allowed_amount) as allowed_amount
    from claims
    inner join claim_lines
        on claims.payer = claim_lines.payer
        and claims.claim_id = claim_lines.claim_id
    where claim_lines.rendering_npi is not null
        and claim_lines.procedure_code is not null
        and claim_lines.allowed_amount is not null
        and claim_lines.claim_status is distinct from 'denied'
    group by 1, 2, 3, 4, 5

),

provider_procedure_months as (

    select
        rendering_npi,
        procedure_code,
        reporting_month,
        count(*) as claim_count,
        sum(allowed_amount) as allowed_amount,
        cast(null as bigint) as month_claim_count
    from claim_procedures
    group by 1, 2, 3

),

month_rows as (

    select
        cast(null as text) as rendering_npi,
        cast(null as text) as procedure_code,
        rebuilt_months.reporting_month,
        cast(null as bigint) as claim_count,
        cast(null as numeric) as allowed_amount,
        count(claims.reporting_month) as month_claim_count
    from {{ claim_months_relation(months, 'reporting_month', 'claims') }} as rebuilt_months
    left join claims
        on rebuilt_months.reporting_month = claims.reporting_month
    group by rebuilt_months.reporting_month

),

final as (

    select *, cast('{{ run_started_at.isoformat() }}' as timestamptz) as built_at from provider_procedure_months
    union all
    select *, cast('{{ run_started_at.isoformat() }}' as timestamptz) as built_at from month_rows

)

select * from final
