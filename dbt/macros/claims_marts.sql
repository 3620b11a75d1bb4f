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
    {%- set months_query -%}
        select {{ month_column }} from {{ claims_relation }} where {{ written_since_last_build() }}
        union
        select held.{{ month_column }}
        from {{ this }} as held
        left join (
            select {{ month_column }}, count(*) as month_claim_count from {{ claims_relation }} group by 1
        ) as current_months
            on held.{{ month_column }} = current_months.{{ month_column }}
        where held.month_claim_count is not null
            and held.month_claim_count <> coalesce(current_months.month_claim_count, 0)
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
