{#
    One row per facility per day with triage visits: counts by priority and the sum of triage levels, so
    that the marts built on visits (triage_trends, facility_monthly, facility_performance) add up a few
    thousand rows instead of every visit, every night.

    Incremental like the fact it sums (delete+insert on visit_date): a build rebuilds the days with a
    loaded file not yet behind any row here and the days with a file no longer loaded (the file ids
    behind each row are kept in file_ids), from the fact, which the same build has just brought up to date.
#}
{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='visit_date',
        on_schema_change='append_new_columns',
        indexes=[{'columns': ['visit_date']}],
        post_hook="{{ delete_rows_of_unloaded_files('medilink_triage_visits', file_ids_column='file_ids', date_column='visit_date') }}",
    )
}}
-- depends_on: {{ ref('stg_ops__file_ledger') }}

with

triage_visits as (

    select * from {{ ref('fct_triage_visits') }}
    {% if is_incremental() %}
    where {{ reporting_days_filter('medilink_triage_visits', 'visit_date', file_ids_column='file_ids') }}
    {% endif %}

),

final as (

    select
        facility_id,
        visit_date,
        count(*) as visit_count,
        count(*) filter (where priority = 'Critical') as critical_count,
        count(*) filter (where priority = 'High') as high_count,
        count(*) filter (where priority = 'Medium') as medium_count,
        count(*) filter (where priority = 'Low') as low_count,
        count(*) filter (where is_urgent) as urgent_count,
        sum(triage_level) as triage_level_sum,
        array_agg(distinct file_id order by file_id) as file_ids,
        cast('{{ run_started_at.isoformat() }}' as timestamptz) as built_at
    from triage_visits
    group by 1, 2

)

select * from final
