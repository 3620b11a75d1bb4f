{#
    One row per member of a payer (payer, member_id) seen in current eligibility or current claims: plan, sex
    and birth date of the member's latest span, and the first and last day enrolled. A member with claims but
    no eligibility has nulls there.
#}
with

spans as (

    select * from {{ ref('int_current_eligibility') }}

),

claims as (

    select * from {{ ref('fct_claims') }}

),

latest_spans as (

    select distinct on (payer, member_id)
        payer,
        member_id,
        plan,
        sex,
        birth_date
    from spans
    order by payer, member_id, enrollment_start_date desc, enrollment_end_date desc, source_row_number desc

),

enrolment as (

    select
        payer,
        member_id,
        min(enrollment_start_date) as first_enrolled_on,
        max(enrollment_end_date) as last_enrolled_on
    from spans
    group by 1, 2

),

members as (

    select payer, member_id from spans
    union
    select payer, member_id from claims

),

final as (

    select
        members.payer,
        members.member_id,
        {{ surrogate_key(['members.payer', 'members.member_id']) }} as member_key,
        latest_spans.plan,
        latest_spans.sex,
        latest_spans.birth_date,
        enrolment.first_enrolled_on,
        enrolment.last_enrolled_on,
        cast('{{ run_started_at.isoformat() }}' as timestamptz) as built_at
    from members
    left join latest_spans
        on members.payer = latest_spans.payer
        and members.member_id = latest_spans.member_id
    left join enrolment
        on members.payer = enrolment.payer
        and members.member_id = enrolment.member_id

)

select * from final
