{#
    One row per enrolment span of each member's current eligibility: the spans of the latest loaded file that
    sent the member (loaded_at, then file_id), so that a corrected member file replaces the member's earlier
    spans. Spans sent twice in that file are kept once.
#}
with

spans as (

    select * from {{ ref('stg_claims__eligibility') }}

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

    select
        payer,
        member_id,
        file_id
    from (
        select
            *,
            row_number() over (partition by payer, member_id order by loaded_at desc, file_id desc) as arrival_rank
        from arrivals
    ) as ranked
    where arrival_rank = 1

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
        spans.source_row_number
    from spans
    inner join latest_arrivals
        on spans.payer = latest_arrivals.payer
        and spans.member_id = latest_arrivals.member_id
        and spans.file_id = latest_arrivals.file_id
    order by spans.payer, spans.member_id, spans.enrollment_start_date, spans.enrollment_end_date, spans.plan,
        spans.source_row_number desc

)

select * from final
