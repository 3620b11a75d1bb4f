{#
    The claims marts that aggregate per provider keep their figures per month in incremental tables in core
    (int_provider_months per month of service; int_provider_procedure_months and int_provider_payer_months per
    reporting month, the month of the file holding a claim's current version; decision 0022's amendment). A build
    rebuilds whole the months (of `month_column`) whose claims changed since its last build, found by:
    - the months of fct_claims's rows written since then (new claims, re-sent ones, versions found again after a
      file was set aside): every month that gains a claim or a changed version;
    - the months whose number of claims in fct_claims differs from the one the table holds for them (its month
      row: provider columns null, month_claim_count set): a month that loses a claim (moved to another month by
      a re-send, or gone with a file set aside) and gains none has fewer.
    Those are all the months whose claims differ. Each rebuilt month gets its month row, written with the month's
    aggregate rows, so delete+insert (keyed by the month) replaces it whole even when it has no claim left (count
    0; the post-hook then removes that row). The months are looked up when the model runs and written into its
    SQL as literals. Neither month is ever null
    (every claim has a first day of service; every file a reporting month, from its key or the day it landed).
#}
{% macro claim_months_to_rebuild(claims_relation, month_column='service_month') -%}
    {%- if not is_incremental() -%}
        {{ return(none) }}
    {%- endif -%}
    {{ return(changed_claim_months(claims_relation, month_column,
        'select ' ~ month_column ~ ', month_claim_count as claim_count from ' ~ this
        ~ ' where month_claim_count is not null')) }}
{%- endmacro %}


{#
    The months (of `month_column`, as 'YYYY-MM-DD', in order) whose claims differ from what the model holds: the
    months of fct_claims's rows written since its last build, and the months whose claim count in `claims_relation`
    differs from the one `held_counts` (a query of month_column, claim_count) gives. Shared by the per-month tables
    (their month rows hold the counts) and claim_anomaly_scores (its rows, counted).
#}
{% macro changed_claim_months(claims_relation, month_column, held_counts) -%}
    {%- set months_query -%}
        select {{ month_column }} from {{ claims_relation }} where {{ written_since_last_build() }}
        union
        select coalesce(held.{{ month_column }}, current_months.{{ month_column }})
        from ({{ held_counts }}) as held
        full join (
            select {{ month_column }}, count(*) as claim_count from {{ claims_relation }} group by 1
        ) as current_months
            on held.{{ month_column }} = current_months.{{ month_column }}
        where held.claim_count is distinct from current_months.claim_count
        order by 1
    {%- endset -%}
    {{ return(run_query(months_query).columns[0].values() | map('string') | list if execute else []) }}
{%- endmacro %}


{# The claims of the months to rebuild (claim_months_to_rebuild: none is every month, a full build). #}
{% macro in_claim_months(months, month_column) -%}
    {%- if months is none -%}
        true
    {%- elif months -%}
        {{ month_column }} in ({% for month in months %}date '{{ month }}'{% if not loop.last %}, {% endif %}{% endfor %})
    {%- else -%}
        false
    {%- endif -%}
{%- endmacro %}


{#
    The months to rebuild as a relation of one column: every one gets its month row, a month left with no claim
    too (count 0), so that delete+insert replaces its rows; the post-hook delete_empty_claim_months then removes
    that row, as a full build has none for a month without claims.
#}
{% macro claim_months_relation(months, month_column, claims) -%}
    {%- if months is none -%}
        (select distinct {{ month_column }} from {{ claims }})
    {%- elif months -%}
        (select cast(unnest(array[{% for month in months %}'{{ month }}'{% if not loop.last %}, {% endif %}{% endfor %}]) as date) as {{ month_column }})
    {%- else -%}
        (select cast(null as date) as {{ month_column }} where false)
    {%- endif -%}
{%- endmacro %}


{# Post-hook of the per-month provider tables: the month rows of months left with no claim. #}
{% macro delete_empty_claim_months() -%}
    delete from {{ this }} where month_claim_count = 0
{%- endmacro %}


{#
    claim_anomaly_scores scores whole the claims of every month from the first whose claims changed since its last
    build (decision 0022's second amendment): the months of fct_claims's rows written since then, and the months
    whose number of claims differs from the number of rows the table holds for them (a month that only loses
    claims, to a re-send reported in another month or with a file set aside). Returns that first month as
    'YYYY-MM-DD', 'none' when no month changed, and none in a full build (every claim).
#}
{% macro claim_months_to_rescore(claims_relation) -%}
    {%- if not is_incremental() -%}
        {{ return(none) }}
    {%- endif -%}
    {%- set months = changed_claim_months(claims_relation, 'reporting_month',
        'select reporting_month, count(*) as claim_count from ' ~ this ~ ' group by 1') -%}
    {{ return(months[0] if months else 'none') }}
{%- endmacro %}


{# The claims claim_anomaly_scores scores whole (claim_months_to_rescore's first month). #}
{% macro rescored_months_filter(first_month, month_column='reporting_month') -%}
    {%- if first_month is none -%}
        true
    {%- elif first_month == 'none' -%}
        false
    {%- else -%}
        {{ month_column }} >= date '{{ first_month }}'
    {%- endif -%}
{%- endmacro %}


{#
    Post-hook of claim_anomaly_scores: the rows of the months it scored whole that this build did not write (their
    claims are gone). The first such month is the one the model's SQL was compiled with (its `rescore_from_month`
    comment): looking it up again after the write would find nothing changed.
#}
{% macro delete_unscored_claims() -%}
    {%- set found = modules.re.search('rescore_from_month: (\\d{4}-\\d{2}-\\d{2})', model.compiled_code or '') -%}
    {%- if found -%}
        delete from {{ this }}
        where reporting_month >= date '{{ found.group(1) }}'
            and built_at < timestamptz '{{ run_started_at.isoformat() }}'
    {%- else -%}
        select 1
    {%- endif -%}
{%- endmacro %}


{# A rule's weight (var claims_anomaly_weights) and its place in a claim's reasons, from its id. #}
{% macro rule_weight(rule_id, rules, weights) -%}
    case {{ rule_id }}
        {%- for rule in rules %}
        when '{{ rule }}' then cast({{ weights[rule] }} as numeric)
        {%- endfor %}
    end
{%- endmacro %}

{% macro rule_order(rule_id, rules) -%}
    case {{ rule_id }}{% for rule in rules %} when '{{ rule }}' then {{ loop.index }}{% endfor %} end
{%- endmacro %}
