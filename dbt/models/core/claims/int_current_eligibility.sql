{#
    One row per enrolment span of each member's current eligibility: the spans of the latest loaded file that
    sent the member (loaded_at, then file_id), so that a corrected member file replaces the member's earlier
    spans. Spans sent twice in that file are kept once.

    Incremental (delete+insert on the member): a run reads the spans of the files not in the table yet and
    writes the members whose latest arrival they hold (macros/latest_arrival.sql; decision 0028).
#}
{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key=['payer', 'member_id'],
        on_schema_change='append_new_columns',
        indexes=[
            {'columns': ['payer', 'member_id']},
            {'columns': ['file_id']},
            {'columns': ['built_at']},
        ],
        post_hook=["{{ delete_rows_of_unloaded_files('eligibility') }}", "{{ analyze_this() }}"],
    )
}}
{# The ledger is read only on incremental runs (the batch's files, the post-hook): declared for dbt's ordering. #}
-- depends_on: {{ ref('stg_ops__file_ledger') }}
with

spans as (

    select * from {{ ref('stg_claims__eligibility') }}
    {% if is_incremental() %}
    where {{ latest_arrival_batch_filter('eligibility', ['payer', 'member_id']) }}
    {% endif %}

),

arrivals as (

    select distinct
        payer,
        member_id,
        file_id,
        loaded_at
    from spans

),

latest_arrivals as (

    {{ latest_arrivals('arrivals', ['payer', 'member_id']) }}

),

final as (

    select distinct on (spans.payer, spans.member_id, spans.enrollment_start_date, spans.enrollment_end_date, spans.plan)
        spans.payer,
        spans.member_id,
        {{ surrogate_key(['spans.payer', 'spans.member_id']) }} as member_key,
        spans.plan,
        spans.sex,
        spans.birth_date,
        spans.enrollment_start_date,
        spans.enrollment_end_date,
        spans.file_id,
        spans.source_row_number,
        spans.loaded_at,
        cast('{{ run_started_at.isoformat() }}' as timestamptz) as built_at
    from spans
    inner join latest_arrivals
        on spans.payer = latest_arrivals.payer
        and spans.member_id = latest_arrivals.member_id
        and spans.file_id = latest_arrivals.file_id
    order by spans.payer, spans.member_id, spans.enrollment_start_date, spans.enrollment_end_date, spans.plan,
        spans.source_row_number desc

)

select * from final
