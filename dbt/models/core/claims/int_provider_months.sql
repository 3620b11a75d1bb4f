{#
    One row per rendering provider (NPI) and month of service of the current claims (fct_claims): claims,
    distinct members, denied claims, billed / allowed / paid sums, and the first-digit counts of its billed amounts
    of at least var('claims_benford_min_amount'). provider_claim_metrics publishes these rows; provider_benford adds
    up the digit counts per provider. Plus one month row per month of service (provider columns null) with the
    month's claims, the bookkeeping of the incremental build.

    Incremental (delete+insert on the month): a build rebuilds the months whose claims changed since its last
    build (macros/claims_marts.sql, claim_months_to_rebuild; decision 0022's amendment).
#}
{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='service_month',
        on_schema_change='fail',
        post_hook=["{{ delete_empty_claim_months() }}", "{{ analyze_this() }}"],
    )
}}
{%- set min_amount = var('claims_benford_min_amount') -%}
{%- set months = claim_months_to_rebuild(ref('fct_claims')) -%}
with

claims as (

    select * from {{ ref('fct_claims') }}
    where {{ in_claim_months(months, 'service_month') }}

),

-- The leading digit of the whole part of a billed amount of at least the minimum (10 by default, so never 0).
claim_digits as (

    select
        *,
        case
            when billed_amount >= {{ min_amount }} then left(cast(floor(billed_amount) as text), 1)
        end as first_digit
    from claims

),

provider_months as (

    select
        rendering_npi,
        service_month,
        count(*) as claim_count,
        count(distinct member_key) as member_count,
        count(*) filter (where claim_status = 'denied') as denied_claim_count,
        sum(billed_amount) as billed_amount,
        sum(allowed_amount) as allowed_amount,
        sum(paid_amount) as paid_amount,
        {%- for digit in range(1, 10) %}
        count(*) filter (where first_digit = '{{ digit }}') as first_digit_{{ digit }}_count,
        {%- endfor %}
        cast(null as bigint) as month_claim_count
    from claim_digits
    where rendering_npi is not null
    group by 1, 2

),

month_rows as (

    select
        cast(null as text) as rendering_npi,
        rebuilt_months.service_month,
        cast(null as bigint) as claim_count,
        cast(null as bigint) as member_count,
        cast(null as bigint) as denied_claim_count,
        cast(null as numeric) as billed_amount,
        cast(null as numeric) as allowed_amount,
        cast(null as numeric) as paid_amount,
        {%- for digit in range(1, 10) %}
        cast(null as bigint) as first_digit_{{ digit }}_count,
        {%- endfor %}
        count(claims.service_month) as month_claim_count
    from {{ claim_months_relation(months, 'service_month', 'claims') }} as rebuilt_months
    left join claims
        on rebuilt_months.service_month = claims.service_month
    group by rebuilt_months.service_month

),

final as (

    select *, cast('{{ run_started_at.isoformat() }}' as timestamptz) as built_at from provider_months
    union all
    select *, cast('{{ run_started_at.isoformat() }}' as timestamptz) as built_at from month_rows

)

select * from final
