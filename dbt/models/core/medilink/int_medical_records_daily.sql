{#
    One row per facility per day with medical records: how many. The marts that count records
    (facility_monthly, facility_performance) add up these rows instead of a million records every night.
    Incremental like int_triage_visits_daily, on record_date.
#}
{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='record_date',
        on_schema_change='append_new_columns',
        indexes=[{'columns': ['record_date']}],
        post_hook="{{ delete_rows_of_unloaded_files('medilink_medical_records', file_ids_column='file_ids', date_column='record_date') }}",
    )
}}
-- depends_on: {{ ref('stg_ops__file_ledger') }}

with

medical_records as (

    select * from {{ ref('fct_medical_records') }}
    {% if is_incremental() %}
    where {{ reporting_days_filter('medilink_medical_records', 'record_date', file_ids_column='file_ids') }}
    {% endif %}

),

final as (

    select
        facility_id,
        record_date,
        count(*) as record_count,
        array_agg(distinct file_id order by file_id) as file_ids,
        cast('{{ run_started_at.isoformat() }}' as timestamptz) as built_at
    from medical_records
    group by 1, 2

)

select * from final
