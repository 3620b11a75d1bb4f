{#
    One row per member and calendar month enrolled on at least one day of it (a member month), from the
    member's current enrolment spans. Where two spans cover a month, the plan is that of the span that started
    last (then the later row of the file).

    Incremental (by member; decision 0028, amendment of 2026-12-06 evening): the pre-hook removes the months of
    the members int_current_eligibility changed since this table's last build, whose months are written again;
    a member still enrolled whose spans did not change gets the months after the latest one held here (an open
    span ends with the month of the latest file that sent it, so it grows by a month each month).
#}
{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        on_schema_change='append_new_columns',
        pre_hook=["{{ delete_changed_members() }}"],
        post_hook=["{{ analyze_this() }}"],
    )
}}
{# The ledger is read only on incremental runs (the pre-hook): declared for dbt's ordering. #}
-- depends_on: {{ ref('stg_ops__file_ledger') }}
with

spans as (

    select * from {{ ref('int_current_eligibility') }}

),

{% if is_incremental() %}
changed_spans as (

    select spans.*, cast(null as date) as last_month_held
    from spans
    where {{ written_since_last_build() }}

),

-- The other members with an open span, and the latest month this table holds of each.
growing_members as (

    select
        open_spans.payer,
        open_spans.member_id,
        (
            select max(existing_rows.month)
            from {{ this }} as existing_rows
            where existing_rows.payer = open_spans.payer and existing_rows.member_id = open_spans.member_id
        ) as last_month_held
    from (
        select distinct payer, member_id
        from spans
        where is_open_ended and not ({{ written_since_last_build() }})
    ) as open_spans

),

grown_spans as (

    select spans.*, growing_members.last_month_held
    from spans
    inner join growing_members
        on spans.payer = growing_members.payer
        and spans.member_id = growing_members.member_id

),

batch_spans as (

    select * from changed_spans
    union all
    select * from grown_spans

),
{% else %}
batch_spans as (

    select spans.*, cast(null as date) as last_month_held
    from spans

),
{% endif %}

span_months as (

    select
        batch_spans.payer,
        batch_spans.member_id,
        batch_spans.member_key,
        batch_spans.plan,
        batch_spans.enrollment_start_date,
        batch_spans.source_row_number,
        cast(covered.month as date) as month
    from batch_spans
    cross join lateral generate_series(
        -- greatest() skips a null: every month of a member written whole
        greatest(date_trunc('month', batch_spans.enrollment_start_date), batch_spans.last_month_held + interval '1 month'),
        date_trunc('month', batch_spans.enrollment_end_date),
        interval '1 month'
    ) as covered (month)
    -- a span that ends before it starts covers no month (the loader rejects those; an open span read as
    -- ending with its file's month can start after it)
    where batch_spans.enrollment_end_date >= batch_spans.enrollment_start_date

),

final as (

    select distinct on (payer, member_id, month)
        payer,
        member_id,
        member_key,
        plan,
        month,
        cast('{{ run_started_at.isoformat() }}' as timestamptz) as built_at
    from span_months
    order by payer, member_id, month, enrollment_start_date desc, source_row_number desc

)

select * from final
