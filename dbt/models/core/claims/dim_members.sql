{#
    One row per member of a payer (payer, member_id) seen in current eligibility or current claims: plan, sex
    and birth date of the member's latest span, and the first and last day enrolled. A member with claims but
    no eligibility has nulls there.

    Incremental (delete+insert on the member; decision 0028, amendment of 2026-12-06 evening): a build rewrites
    the members whose spans int_current_eligibility or whose claims fct_claims wrote since this table's last
    build, those whose last day enrolled moved (an open span grows with each month's file) or who lost their
    spans; the pre-hook removes the members left with neither spans nor claims.
#}
{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key=['payer', 'member_id'],
        on_schema_change='append_new_columns',
        pre_hook=["{{ delete_members_gone() }}"],
        post_hook=["{{ analyze_this() }}"],
    )
}}
with

spans as (

    select * from {{ ref('int_current_eligibility') }}

),

claims as (

    select * from {{ ref('fct_claims') }}

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

{% if is_incremental() %}
changed_members as (

    select payer, member_id from spans where {{ written_since_last_build() }}
    union
    select payer, member_id from {{ ref('fct_claims') }} where {{ written_since_last_build() }}
    union
    select existing_rows.payer, existing_rows.member_id
    from {{ this }} as existing_rows
    left join enrolment
        on existing_rows.payer = enrolment.payer
        and existing_rows.member_id = enrolment.member_id
    where existing_rows.last_enrolled_on is distinct from enrolment.last_enrolled_on

),

batch_spans as (

    select spans.*
    from spans
    inner join changed_members
        on spans.payer = changed_members.payer
        and spans.member_id = changed_members.member_id

),

-- Members with spans are members; a claim is looked for (one probe of the member_key index each) only for those
-- without. fct_claims is named in each place, not through the CTE `claims`: a CTE read twice is computed whole.
batch_claim_members as (

    select changed_members.payer, changed_members.member_id
    from changed_members
    left join enrolment
        on changed_members.payer = enrolment.payer
        and changed_members.member_id = enrolment.member_id
    cross join lateral (
        select
        from {{ ref('fct_claims') }} as claims
        where claims.member_key = {{ surrogate_key(['changed_members.payer', 'changed_members.member_id']) }}
            and claims.payer = changed_members.payer
            and claims.member_id = changed_members.member_id
        limit 1
    ) as first_claim
    where enrolment.member_id is null

),
{% else %}
batch_spans as (

    select * from spans

),

batch_claim_members as (

    select payer, member_id from claims

),
{% endif %}

latest_spans as (

    select distinct on (payer, member_id)
        payer,
        member_id,
        plan,
        sex,
        birth_date
    from batch_spans
    order by payer, member_id, enrollment_start_date desc, enrollment_end_date desc, source_row_number desc

),

members as (

    select payer, member_id from batch_spans
    union
    select payer, member_id from batch_claim_members

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
