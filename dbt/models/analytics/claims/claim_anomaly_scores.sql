{#
    One row per current claim (fct_claims): an anomaly score from 0 to 1 and the reasons behind it. Each
    reason is a JSON object with the rule's id, the claim's statistic, the peer value it was compared with and
    the rule's weight; the score is the sum of the weights of the rules that fired, at most 1. A lead for an
    investigator, not a verdict. Every rule, threshold and weight: docs/claims-anomaly-rules.md.

    A table rebuilt whole each build (decision 0022's amendment, revised after the full-size run: writing only the
    rows that differ took 43-46 s of a full-size night against 32-33 s for the table, because every claim whose
    reason carries a peer figure that a new month moves, a fifth of them, is rewritten anyway).
#}
{#- The rules in the order a claim's reasons list them; each needs its weight in var('claims_anomaly_weights'). -#}
{%- set rules = ['duplicate', 'cost_outlier', 'service_after_received', 'implausible_length_of_stay',
                 'benford_first_digit'] -%}
{%- set weights = var('claims_anomaly_weights') -%}
{%- if weights.keys() | sort | list != rules | sort | list -%}
    {{- exceptions.raise_compiler_error('claims_anomaly_weights must give a weight to each of ' ~ rules | join(', ')
                                        ~ ' and nothing else, not to ' ~ weights.keys() | sort | join(', ')) -}}
{%- endif -%}
{%- set bands = var('claims_benford_mad_bands') -%}
with

claims as (

    select * from {{ ref('fct_claims') }}

),

claim_lines as (

    select * from {{ ref('fct_claim_lines') }}

),

duplicates as (

    select * from {{ ref('duplicate_claims') }}

),

cost_outliers as (

    select * from {{ ref('provider_cost_outliers') }}

),

benford as (

    select * from {{ ref('provider_benford') }}

),

duplicate_reasons as (

    select
        payer,
        claim_id,
        'duplicate' as rule_id,
        cast(copy_count as numeric) as statistic,
        cast(1 as numeric) as peer_value,
        jsonb_build_object('original_claim_id', original_claim_id) as detail
    from duplicates
    where duplicate_type = 'suspected_duplicate'
        and not is_original

),

-- The claim's line whose provider and procedure stand furthest above their peers.
cost_reasons as (

    select distinct on (claim_lines.payer, claim_lines.claim_id)
        claim_lines.payer,
        claim_lines.claim_id,
        'cost_outlier' as rule_id,
        cost_outliers.allowed_per_claim as statistic,
        cost_outliers.peer_median_allowed_per_claim as peer_value,
        jsonb_build_object(
            'procedure_code', cost_outliers.procedure_code,
            'robust_z', cost_outliers.robust_z,
            'peer_provider_count', cost_outliers.peer_provider_count
        ) as detail
    from claim_lines
    inner join cost_outliers
        on claim_lines.rendering_npi = cost_outliers.rendering_npi
        and claim_lines.procedure_code = cost_outliers.procedure_code
    where cost_outliers.is_high_cost_outlier
    order by claim_lines.payer, claim_lines.claim_id, cost_outliers.robust_z desc

),

service_after_received_reasons as (

    select
        payer,
        claim_id,
        'service_after_received' as rule_id,
        cast(service_to_date - claim_date as numeric) as statistic,
        cast(0 as numeric) as peer_value,
        jsonb_build_object() as detail
    from claims
    where service_to_date > claim_date

),

length_of_stay_reasons as (

    select
        payer,
        claim_id,
        'implausible_length_of_stay' as rule_id,
        cast(discharge_date - admit_date as numeric) as statistic,
        cast({{ var('claims_max_length_of_stay_days') }} as numeric) as peer_value,
        jsonb_build_object() as detail
    from claims
    where discharge_date - admit_date > {{ var('claims_max_length_of_stay_days') }}

),

benford_reasons as (

    select
        claims.payer,
        claims.claim_id,
        'benford_first_digit' as rule_id,
        benford.first_digit_mad as statistic,
        cast({{ bands['marginal'] }} as numeric) as peer_value,
        jsonb_build_object('conformity', benford.conformity) as detail
    from claims
    inner join benford
        on claims.rendering_npi = benford.rendering_npi
    where benford.is_nonconforming

),

reasons as (

    select * from duplicate_reasons
    union all
    select * from cost_reasons
    union all
    select * from service_after_received_reasons
    union all
    select * from length_of_stay_reasons
    union all
    select * from benford_reasons

),

weighted as (

    select
        *,
        case rule_id
            {%- for rule_id in rules %}
            when '{{ rule_id }}' then {{ loop.index }}
            {%- endfor %}
        end as rule_order,
        case rule_id
            {%- for rule_id in rules %}
            when '{{ rule_id }}' then cast({{ weights[rule_id] }} as numeric)
            {%- endfor %}
        end as weight
    from reasons

),

claim_reasons as (

    select
        payer,
        claim_id,
        least(1, sum(weight)) as anomaly_score,
        jsonb_agg(
            jsonb_build_object(
                'rule_id', rule_id,
                'statistic', statistic,
                'peer_value', peer_value,
                'weight', weight
            ) || detail
            order by rule_order
        ) as reasons,
        array_agg(rule_id order by rule_order) as rule_ids
    from weighted
    group by 1, 2

),

final as (

    select
        claims.payer,
        claims.claim_id,
        claims.member_key,
        claims.rendering_npi,
        claims.claim_type,
        claims.claim_status,
        claims.claim_date,
        claims.service_from_date,
        claims.procedure_code,
        claims.billed_amount,
        claims.allowed_amount,
        claims.paid_amount,
        cast(coalesce(claim_reasons.anomaly_score, 0) as numeric(3, 2)) as anomaly_score,
        coalesce(cardinality(claim_reasons.rule_ids), 0) as reason_count,
        coalesce(claim_reasons.reasons, '[]'::jsonb) as reasons,
        coalesce(claim_reasons.rule_ids, cast(array[] as text[])) as rule_ids,
        cast('{{ run_started_at.isoformat() }}' as timestamptz) as built_at
    from claims
    left join claim_reasons
        on claims.payer = claim_reasons.payer
        and claims.claim_id = claim_reasons.claim_id

)

select * from final
