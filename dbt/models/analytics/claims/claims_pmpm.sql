{#
    One row per payer, plan, month and claim type (and 'all' claim types): paid and allowed amounts per member
    per month. Member months come from eligibility (fct_member_months), amounts from the current claims by the
    month their service began, under the plan the member was enrolled in that month; claims of a member not
    enrolled that month fall under the plan 'not enrolled', whose member months are 0 and whose rates are null.
    A month with no enrolled members has no rate, never a division by zero. De-identified: the counts pass
    disclosure control (macros/disclosure_control.sql); a group whose count is withheld shows nothing else
    about it, and the rates are worked out from the published member months.
#}
-- Each claim finds its member's plan among every member month (3 M claims, 6.4 M member months at issue 15's size):
-- the hash of that join spills to disk in the analytics marts' 64 MB (this model was 33 s of the night). It runs
-- after the project's pre-hook, so this setting wins, for this model's transaction only.
{{ config(pre_hook="set local work_mem = '512MB'") }}
with

-- Read twice (the enrolled counts, the claims' plans): not materialized, so that each reads the table itself. A
-- materialized CTE has no index nor statistics, and the claims joined it by sorting both sides on disk (5.0 s against
-- 2.4-2.6 s at a third of issue 15's size).
member_months as not materialized (

    select * from {{ ref('fct_member_months') }}

),

claims as (

    select * from {{ ref('fct_claims') }}

),

enrolled as (

    select
        payer,
        plan,
        month,
        count(*) as member_months
    from member_months
    group by 1, 2, 3

),

claim_months as (

    select
        claims.payer,
        coalesce(member_months.plan, 'not enrolled') as plan,
        claims.service_month as month,
        coalesce(claims.claim_type, 'unknown') as claim_type,
        claims.paid_amount,
        claims.allowed_amount
    from claims
    left join member_months
        on claims.payer = member_months.payer
        and claims.member_id = member_months.member_id
        and claims.service_month = member_months.month

),

spend as (

    select
        payer,
        plan,
        month,
        case when grouping(claim_type) = 1 then 'all' else claim_type end as claim_type,
        count(*) as claim_count,
        coalesce(sum(paid_amount), 0) as paid_amount,
        coalesce(sum(allowed_amount), 0) as allowed_amount
    from claim_months
    group by grouping sets ((payer, plan, month, claim_type), (payer, plan, month))

),

-- Every enrolled month has its 'all' row, with or without claims.
quiet_months as (

    select
        enrolled.payer,
        enrolled.plan,
        enrolled.month,
        'all' as claim_type,
        cast(0 as bigint) as claim_count,
        cast(0 as numeric) as paid_amount,
        cast(0 as numeric) as allowed_amount
    from enrolled
    where not exists (
        select from spend
        where spend.payer = enrolled.payer and spend.plan = enrolled.plan and spend.month = enrolled.month
    )

),

groups as (

    select * from spend
    union all
    select * from quiet_months

),

marked as (

    select
        groups.*,
        coalesce(enrolled.member_months, 0) as member_months,
        {{ sdc_is_small('coalesce(enrolled.member_months, 0)') }} as is_member_months_suppressed,
        -- A group whose member months are withheld shows nothing else about it.
        {{ sdc_is_small('coalesce(enrolled.member_months, 0)') }} or {{ sdc_is_small('groups.claim_count') }}
            as is_claim_count_suppressed
    from groups
    left join enrolled
        on groups.payer = enrolled.payer
        and groups.plan = enrolled.plan
        and groups.month = enrolled.month

),

published as (

    select
        *,
        {{ sdc_publish('member_months', 'is_member_months_suppressed') }} as published_member_months,
        {{ sdc_publish('claim_count', 'is_claim_count_suppressed') }} as published_claim_count
    from marked

),

final as (

    select
        payer,
        plan,
        month,
        claim_type,
        published_member_months as member_months,
        published_claim_count as claim_count,
        case when not is_claim_count_suppressed then paid_amount end as paid_amount,
        case when not is_claim_count_suppressed then allowed_amount end as allowed_amount,
        case when not is_claim_count_suppressed then
            round(paid_amount / nullif(published_member_months, 0), 2)
        end as paid_pmpm,
        case when not is_claim_count_suppressed then
            round(allowed_amount / nullif(published_member_months, 0), 2)
        end as allowed_pmpm,
        is_member_months_suppressed,
        is_claim_count_suppressed,
        cast('{{ run_started_at.isoformat() }}' as timestamptz) as built_at
    from published

)

select * from final
