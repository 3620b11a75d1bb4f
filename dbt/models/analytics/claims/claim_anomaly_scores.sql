{#
    One row per current claim (fct_claims): an anomaly score from 0 to 1 and the reasons behind it. Each
    reason is a JSON object with the rule's id, the claim's statistic, the peer value it was compared with and
    the rule's weight; the score is the sum of the weights of the rules that fired, at most 1. A lead for an
    investigator, not a verdict. Every rule, threshold and weight: docs/claims-anomaly-rules.md.

    Scored as of the claim's reporting month (decision 0022's second amendment): the provider-level reasons
    (cost_outlier, benford_first_digit) compare the claim with its peers as they stood when that month was reported,
    every month received up to it, macros/claims_peers.sql computing the figures as the provider marts do; the
    claim-level reasons (duplicate, dates) are current. So a later month leaves a claim's row as it was, and an
    incremental build writes:
    * every claim of the months from the first whose claims changed since its last build (claim_months_to_rescore:
      new, re-sent or set-aside claims; a re-send changes the month it leaves too): all their reasons computed;
    * the claims that are or were suspected duplicates, from earlier months: their duplicate reason recomputed, their
      other reasons kept from the held row (the months they were scored as of did not change).
    A post-hook removes the rows of the rescored months that the build did not write (their claims are gone).
#}
{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key=['payer', 'claim_id'],
        on_schema_change='fail',
        post_hook=["{{ delete_unscored_claims() }}", "{{ analyze_this() }}"],
    )
}}
{#- The rules in the order a claim's reasons list them; each needs its weight in var('claims_anomaly_weights'). -#}
{%- set rules = ['duplicate', 'cost_outlier', 'service_after_received', 'implausible_length_of_stay',
                 'benford_first_digit'] -%}
{%- set weights = var('claims_anomaly_weights') -%}
{%- if weights.keys() | sort | list != rules | sort | list -%}
    {{- exceptions.raise_compiler_error('claims_anomaly_weights must give a weight to each of ' ~ rules | join(', ')
                                        ~ ' and nothing else, not to ' ~ weights.keys() | sort | join(', ')) -}}
{%- endif -%}
{%- set bands = var('claims_benford_mad_bands') -%}
{#- The first month to rescore whole: none in a full build (every claim), 'none' when no claim changed. -#}
{%- set first_month = claim_months_to_rescore(ref('fct_claims')) -%}
-- rescore_from_month: {{ first_month }} (read by the post-hook delete_unscored_claims)
with

-- The claims scored whole: every claim of a full build, the claims of the months from the first that changed in an
-- incremental one.
claims as (

    select * from {{ ref('fct_claims') }}
    where {{ rescored_months_filter(first_month) }}

),

claim_lines as (

    select claim_lines.*
    from claims
    inner join {{ ref('fct_claim_lines') }} as claim_lines
        on claims.payer = claim_lines.payer
        and claims.claim_id = claim_lines.claim_id

),

duplicates as (

    select * from {{ ref('duplicate_claims') }}
    where duplicate_type = 'suspected_duplicate'

),

{% if is_incremental() %}
-- The claims of earlier months that are suspected duplicates now or had the duplicate reason when last scored: the
-- only reason of theirs that can have changed (a claim of their group arrived, changed or went). Their rows are
-- current otherwise: a claim that changed or went changed its month, which is then rescored whole.
held_duplicates as (

    select *
    from {{ this }} as held
    where not ({{ rescored_months_filter(first_month, 'held.reporting_month') }})
        and (
            'duplicate' = any(held.rule_ids)
            or exists (
                select 1 from duplicates
                where duplicates.payer = held.payer and duplicates.claim_id = held.claim_id
            )
        )

),
{% endif %}

-- The months whose claims are scored. A claim's peers are every claim of its reporting month and the months before
-- (macros/claims_peers.sql computes the figures as the provider marts do, per scored month).
scored_months as (

    select distinct reporting_month as scored_month from claims

),

scored_range as (

    select min(scored_month) as first_month, max(scored_month) as last_month from scored_months

),

-- Each provider's running claims and allowed amounts per procedure, month by month, and the months each running
-- total holds for (until the provider's next month with the procedure): one row per provider, procedure and scored
-- month, not one per month added up again for every later month.
procedure_running as (

    select
        rendering_npi,
        procedure_code,
        reporting_month,
        lead(reporting_month) over running as next_month,
        sum(claim_count) over running as claim_count,
        sum(allowed_amount) over running as allowed_amount
    from {{ ref('int_provider_procedure_months') }}
    where rendering_npi is not null
        and reporting_month <= (select last_month from scored_range)
    window running as (partition by rendering_npi, procedure_code order by reporting_month)

),

provider_procedures as (

    select
        scored_months.scored_month,
        procedure_running.rendering_npi,
        procedure_running.procedure_code,
        cast(procedure_running.claim_count as bigint) as claim_count,
        procedure_running.allowed_amount / procedure_running.claim_count as allowed_per_claim
    from {{ as_of_scored_months('procedure_running') }}

),

{{ cost_peer_ctes('cost_figures', 'provider_procedures', ['scored_month']) }},

-- The first digits of the billed amounts per provider and reporting month (int_provider_months counts them per
-- month of service, which late claims change after the fact), running totals as above.
digit_running as (

    select
        rendering_npi,
        first_digit,
        reporting_month,
        lead(reporting_month) over running as next_month,
        sum(digit_count) over running as digit_count
    from (
        select
            rendering_npi,
            reporting_month,
            cast(left(cast(floor(billed_amount) as text), 1) as integer) as first_digit,
            count(*) as digit_count
        from {{ ref('fct_claims') }}
        where rendering_npi is not null
            and billed_amount >= {{ var('claims_benford_min_amount') }}
            and reporting_month <= (select last_month from scored_range)
        group by 1, 2, 3
    ) as digit_months
    window running as (partition by rendering_npi, first_digit order by reporting_month)

),

digit_counts as (

    select
        scored_months.scored_month,
        digit_running.rendering_npi,
        digit_running.first_digit,
        cast(digit_running.digit_count as bigint) as digit_count
    from {{ as_of_scored_months('digit_running') }}

),

{{ benford_ctes('benford_figures', 'digit_counts', ['scored_month']) }},

duplicate_reasons as (

    select
        payer,
        claim_id,
        'duplicate' as rule_id,
        cast(copy_count as numeric) as statistic,
        cast(1 as numeric) as peer_value,
        jsonb_build_object('original_claim_id', original_claim_id) as detail
    from duplicates
    where not is_original

),

-- The claim's line whose provider and procedure stand furthest above their peers as of the claim's month.
cost_reasons as (

    select distinct on (claim_lines.payer, claim_lines.claim_id)
        claim_lines.payer,
        claim_lines.claim_id,
        'cost_outlier' as rule_id,
        round(cost_figures.allowed_per_claim, 2) as statistic,
        round(cost_figures.peer_median, 2) as peer_value,
        jsonb_build_object(
            'procedure_code', cost_figures.procedure_code,
            'robust_z', round(cost_figures.robust_z, 4),
            'peer_provider_count', cost_figures.peer_provider_count
        ) as detail
    from claim_lines
    inner join cost_figures
        on claim_lines.reporting_month = cost_figures.scored_month
        and claim_lines.rendering_npi = cost_figures.rendering_npi
        and claim_lines.procedure_code = cost_figures.procedure_code
    where cost_figures.has_verdict
        and cost_figures.robust_z > {{ var('claims_outlier_z') }}
    order by claim_lines.payer, claim_lines.claim_id, cost_figures.robust_z desc

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
        round(benford_figures.first_digit_mad, 6) as statistic,
        cast({{ bands['marginal'] }} as numeric) as peer_value,
        jsonb_build_object('conformity', benford_figures.conformity) as detail
    from claims
    inner join benford_figures
        on claims.reporting_month = benford_figures.scored_month
        and claims.rendering_npi = benford_figures.rendering_npi
    where benford_figures.has_verdict
        and benford_figures.first_digit_mad > {{ bands['marginal'] }}

),

{%- set claim_columns = ['payer', 'claim_id', 'member_key', 'rendering_npi', 'claim_type', 'claim_status', 'claim_date',
                         'service_from_date', 'procedure_code', 'billed_amount', 'allowed_amount', 'paid_amount',
                         'reporting_month'] %}
-- The claims this build writes (read twice: NOT MATERIALIZED keeps Postgres from copying every claim aside).
scored_claims as not materialized (

    select {{ claim_columns | join(', ') }} from claims
    {% if is_incremental() %}
    union all
    select {{ claim_columns | join(', ') }} from held_duplicates
    {% endif %}

),

reasons as (

    select payer, claim_id, rule_id, jsonb_build_object('rule_id', rule_id, 'statistic', statistic,
        'peer_value', peer_value, 'weight', {{ rule_weight('rule_id', rules, weights) }}) || detail as reason
    from (
        -- The duplicate reason is current for every claim written, an earlier month's duplicate included.
        select * from duplicate_reasons
        where exists (select 1 from scored_claims where scored_claims.payer = duplicate_reasons.payer
                                                      and scored_claims.claim_id = duplicate_reasons.claim_id)
        union all
        select * from cost_reasons
        union all
        select * from service_after_received_reasons
        union all
        select * from length_of_stay_reasons
        union all
        select * from benford_reasons
    ) as fired
    {% if is_incremental() %}
    union all
    -- The earlier months' duplicates keep the other reasons they were scored with.
    select held_duplicates.payer, held_duplicates.claim_id, held_reason ->> 'rule_id', held_reason
    from held_duplicates
    cross join jsonb_array_elements(held_duplicates.reasons) as held_reason
    where held_reason ->> 'rule_id' <> 'duplicate'
    {% endif %}

),

claim_reasons as (

    select
        payer,
        claim_id,
        least(1, sum(cast(reason ->> 'weight' as numeric))) as anomaly_score,
        jsonb_agg(reason order by {{ rule_order('rule_id', rules) }}) as reasons,
        array_agg(rule_id order by {{ rule_order('rule_id', rules) }}) as rule_ids
    from reasons
    group by 1, 2

),

final as (

    select
        {%- for column in claim_columns %}
        scored_claims.{{ column }},
        {%- endfor %}
        cast(coalesce(claim_reasons.anomaly_score, 0) as numeric(3, 2)) as anomaly_score,
        coalesce(cardinality(claim_reasons.rule_ids), 0) as reason_count,
        coalesce(claim_reasons.reasons, '[]'::jsonb) as reasons,
        coalesce(claim_reasons.rule_ids, cast(array[] as text[])) as rule_ids,
        cast('{{ run_started_at.isoformat() }}' as timestamptz) as built_at
    from scored_claims
    left join claim_reasons
        on scored_claims.payer = claim_reasons.payer
        and scored_claims.claim_id = claim_reasons.claim_id

)

select * from final
