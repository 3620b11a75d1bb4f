{#
    The peer figures of the claims anomaly rules, written once for the two places that compute them: the provider
    marts (provider_cost_outliers, provider_benford: every month received so far) and claim_anomaly_scores (per
    reporting month, the figures as they stood when the claim's month was reported; decision 0022's second
    amendment). Each macro writes CTEs; `partition` names the columns a set of peers shares besides the procedure
    (none for the marts, the scored month for the scores). Rules: docs/claims-anomaly-rules.md.
#}

{#
    cost_outlier: from `source` (partition columns, rendering_npi, procedure_code, claim_count, allowed_per_claim:
    one row per provider and procedure), the CTE `name` with those columns and the peer figures: the peers are
    every provider billing the procedure (itself included). Iglewicz and Hoaglin's modified z-score from the peer
    median and MAD; when more than half the peers cost the same, MAD is 0 and the z-score undefined: the mean
    absolute deviation stands in, scaled by 1.253314 (sqrt(pi / 2), its ratio to the standard deviation of a
    normal distribution, as 0.6745 is the MAD's). When that is 0 too, every peer costs the median and so does this
    provider: z = 0. has_verdict: at least var('claims_min_peer_count') peers.
#}
{% macro cost_peer_ctes(name, source, partition=[]) -%}
{%- set peers = partition + ['procedure_code'] -%}
{%- set on = [] -%}
{%- for column in peers -%}{%- do on.append(source ~ '.' ~ column ~ ' = ' ~ name ~ '_medians.' ~ column) -%}{%- endfor %}
{{ name }}_medians as (

    select
        {{ peers | join(', ') }},
        count(*) as peer_provider_count,
        cast(percentile_cont(0.5) within group (order by allowed_per_claim) as numeric) as peer_median
    from {{ source }}
    group by {{ peers | join(', ') }}

),

{{ name }}_deviations as (

    select
        {{ source }}.*,
        {{ name }}_medians.peer_provider_count,
        {{ name }}_medians.peer_median,
        abs({{ source }}.allowed_per_claim - {{ name }}_medians.peer_median) as absolute_deviation
    from {{ source }}
    inner join {{ name }}_medians
        on {{ on | join('\n        and ') }}

),

{{ name }}_spreads as (

    select
        {{ peers | join(', ') }},
        cast(percentile_cont(0.5) within group (order by absolute_deviation) as numeric) as peer_mad,
        avg(absolute_deviation) as peer_mean_absolute_deviation
    from {{ name }}_deviations
    group by {{ peers | join(', ') }}

),

{{ name }} as (

    select
        deviations.*,
        spreads.peer_mad,
        spreads.peer_mean_absolute_deviation,
        deviations.peer_provider_count >= {{ var('claims_min_peer_count') | int }} as has_verdict,
        case
            when spreads.peer_mad > 0 then 'mad'
            when spreads.peer_mean_absolute_deviation > 0 then 'mean_absolute_deviation'
            else 'no_spread'
        end as spread_method,
        case
            when spreads.peer_mad > 0
                then 0.6745 * (deviations.allowed_per_claim - deviations.peer_median) / spreads.peer_mad
            when spreads.peer_mean_absolute_deviation > 0
                then (deviations.allowed_per_claim - deviations.peer_median)
                    / (1.253314 * spreads.peer_mean_absolute_deviation)
            else 0
        end as robust_z,
        percent_rank() over (
            partition by {% for column in peers %}deviations.{{ column }}{% if not loop.last %}, {% endif %}{% endfor %}
            order by deviations.allowed_per_claim
        ) as cost_percentile
    from {{ name }}_deviations as deviations
    inner join {{ name }}_spreads as spreads
        on {% for column in peers %}deviations.{{ column }} = spreads.{{ column }}{% if not loop.last %}
        and {% endif %}{% endfor %}

)
{%- endmacro %}


{#
    benford_first_digit: from `digit_counts` (partition columns, rendering_npi, first_digit 1-9, digit_count: the
    provider's billed amounts of at least var('claims_benford_min_amount') by first digit), the CTE `name`: one row
    per provider with claim_count (its amounts), has_verdict (at least var('claims_benford_min_claims')),
    first_digit_mad (the mean absolute deviation of the nine shares from log10(1 + 1/d)) and conformity (Nigrini's
    band, var('claims_benford_mad_bands'); null without a verdict).
#}
{% macro benford_ctes(name, digit_counts, partition=[]) -%}
{%- set keys = partition + ['rendering_npi'] -%}
{%- set bands = var('claims_benford_mad_bands') -%}
{{ name }}_providers as (

    select
        {{ keys | join(', ') }},
        cast(sum(digit_count) as bigint) as claim_count
    from {{ digit_counts }}
    group by {{ keys | join(', ') }}
    having sum(digit_count) > 0

),

-- Benford's share of each first digit, computed once: a numeric log costs about 7 microseconds, and inlined this
-- would run once per provider, month and digit (MATERIALIZED keeps the planner from inlining it).
{{ name }}_expected as materialized (

    select digit, log(1 + 1.0 / digit) as benford_share
    from generate_series(1, 9) as digits (digit)

),

{{ name }}_shares as (

    select
        {% for column in keys %}providers.{{ column }}, {% endfor %}
        digits.digit,
        coalesce(counts.digit_count, 0)::numeric / providers.claim_count as actual_share,
        digits.benford_share
    from {{ name }}_providers as providers
    cross join {{ name }}_expected as digits
    left join {{ digit_counts }} as counts
        on {% for column in keys %}providers.{{ column }} = counts.{{ column }}
        and {% endfor %}digits.digit = counts.first_digit

),

{{ name }} as (

    select
        {% for column in keys %}providers.{{ column }}, {% endfor %}
        providers.claim_count,
        providers.claim_count >= {{ var('claims_benford_min_claims') }} as has_verdict,
        deviations.first_digit_mad,
        case
            when providers.claim_count < {{ var('claims_benford_min_claims') }} then null
            when deviations.first_digit_mad <= {{ bands['close'] }} then 'close'
            when deviations.first_digit_mad <= {{ bands['acceptable'] }} then 'acceptable'
            when deviations.first_digit_mad <= {{ bands['marginal'] }} then 'marginal'
            else 'nonconformity'
        end as conformity
    from {{ name }}_providers as providers
    inner join (
        select {{ keys | join(', ') }}, avg(abs(actual_share - benford_share)) as first_digit_mad
        from {{ name }}_shares
        group by {{ keys | join(', ') }}
    ) as deviations
        on {% for column in keys %}providers.{{ column }} = deviations.{{ column }}{% if not loop.last %}
        and {% endif %}{% endfor %}

)
{%- endmacro %}


{#
    The FROM of a running total as of each scored month (claim_anomaly_scores): `running` has reporting_month, the
    month of the total, and next_month, the month of the next total of the same key (null for the last); a total holds
    for the months from its own to the one before the next. Its CTEs scored_months (scored_month) and scored_range
    (first_month, last_month) say which months are scored.
#}
{% macro as_of_scored_months(running) -%}
{{ running }}
    cross join scored_range
    cross join lateral generate_series(
        greatest({{ running }}.reporting_month, scored_range.first_month),
        coalesce({{ running }}.next_month - interval '1 month', scored_range.last_month),
        interval '1 month'
    ) as held_months (held_month)
    inner join scored_months
        on scored_months.scored_month = cast(held_months.held_month as date)
    where coalesce({{ running }}.next_month, scored_range.last_month) >= scored_range.first_month
{%- endmacro %}
