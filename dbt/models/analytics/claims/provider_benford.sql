{#
    One row per rendering provider (NPI): a first-digit (Benford) test of the billed amounts of its current
    claims. Mean absolute deviation (MAD) of the nine first-digit shares from Benford's log10(1 + 1/d), and
    Nigrini's conformity band; no verdict below var('claims_benford_min_claims') amounts. Amounts below
    var('claims_benford_min_amount') are left out. Rules: docs/claims-anomaly-rules.md (rule benford_first_digit).
    The digit counts are kept per month of service in int_provider_months, which a night updates for the months
    it touched; this table adds them up.
#}
{%- set bands = var('claims_benford_mad_bands') -%}
with

provider_months as (

    select * from {{ ref('int_provider_months') }}

),

-- The digit counts of each provider's months (int_provider_months: amounts of at least the minimum only).
digit_counts as (

    select
        provider_months.rendering_npi,
        digits.first_digit,
        cast(sum(digits.digit_count) as bigint) as digit_count
    from provider_months
    cross join lateral (
        values
            {%- for digit in range(1, 10) %}
            ({{ digit }}, provider_months.first_digit_{{ digit }}_count){% if not loop.last %},{% endif %}
            {%- endfor %}
    ) as digits (first_digit, digit_count)
    where provider_months.rendering_npi is not null
    group by 1, 2

),

{{ benford_ctes('scored', 'digit_counts') }},

marked as (

    select
        *,
        {{ sdc_is_small('claim_count') }} as is_claim_count_suppressed
    from scored

),

final as (

    select
        rendering_npi,
        {{ sdc_publish('claim_count', 'is_claim_count_suppressed') }} as claim_count,
        has_verdict,
        case when has_verdict then round(first_digit_mad, 6) end as first_digit_mad,
        conformity,
        case when has_verdict then first_digit_mad > {{ bands['marginal'] }} end as is_nonconforming,
        is_claim_count_suppressed,
        cast('{{ run_started_at.isoformat() }}' as timestamptz) as built_at
    from marked

)

select * from final
