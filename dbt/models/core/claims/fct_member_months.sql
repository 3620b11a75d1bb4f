{#
    One row per member and calendar month enrolled on at least one day of it (a member month), from the
    member's current enrolment spans. Where two spans cover a month, the plan is that of the span that started
    last (then the later row of the file).
#}
with

spans as (

    select * from {{ ref('int_current_eligibility') }}

),

span_months as (

    select
        spans.payer,
        spans.member_id,
        spans.member_key,
        spans.plan,
        spans.enrollment_start_date,
        spans.source_row_number,
        cast(covered.month as date) as month
    from spans
    cross join lateral generate_series(
        date_trunc('month', spans.enrollment_start_date),
        date_trunc('month', spans.enrollment_end_date),
        interval '1 month'
    ) as covered (month)
    -- a span that ends before it starts covers no month (the loader rejects those; an open span read as
    -- ending with its file's month can start after it)
    where spans.enrollment_end_date >= spans.enrollment_start_date

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
