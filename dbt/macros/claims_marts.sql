{#
    The claims marts that aggregate per provider keep their figures per month of service in incremental tables in
    core (int_provider_months, int_provider_procedure_months, int_provider_payer_months; decision 0022's
    amendment). A build rebuilds whole the months whose claims changed since its last build, found by:
    - the months of fct_claims's rows written since then (new claims, re-sent ones, versions found again after a
      file was set aside): every month that gains a claim or a changed version;
    - the months whose number of claims in fct_claims differs from the one the table holds for them (its month
      row: provider columns null, month_claim_count set): a month that loses a claim (moved to another month by
      a re-send, or gone with a file set aside) and gains none has fewer.
    Those are all the months whose claims differ. The month row is written with the month's aggregate rows, so a
    month left with no claim keeps a row (count 0) and delete+insert (keyed by the month) replaces it whole.
    The months are looked up when the model runs and written into its SQL as literals.
#}
{% macro claim_months_filter(claims_relation) -%}
    {%- if not is_incremental() -%}
        {{ return('true') }}
    {%- endif -%}
    {%- set months_query -%}
        select service_month from {{ claims_relation }} where {{ written_since_last_build() }}
        union
        select held.service_month
        from {{ this }} as held
        left join (
            select service_month, count(*) as month_claim_count from {{ claims_relation }} group by 1
        ) as current_months
            on held.service_month = current_months.service_month
        where held.month_claim_count is not null
            and held.month_claim_count <> coalesce(current_months.month_claim_count, 0)
        order by 1
    {%- endset -%}
    {%- set months = run_query(months_query).columns[0].values() if execute else [] -%}
    {%- if months -%}
        service_month in ({% for month in months %}date '{{ month }}'{% if not loop.last %}, {% endif %}{% endfor %})
    {%- else -%}
        false
    {%- endif -%}
{%- endmacro %}


{#
    Post-hook of claim_anomaly_scores (incremental, delete+insert on the claim): the claims fct_claims no longer
    holds (their only loaded file set aside) leave. delete+insert replaces only the claims of the new batch.
#}
{% macro delete_claims_no_longer_current() -%}
    delete from {{ this }} as held
    where not exists (
        select
        from {{ ref('fct_claims') }} as claims
        where claims.payer = held.payer
            and claims.claim_id = held.claim_id
    )
{%- endmacro %}
