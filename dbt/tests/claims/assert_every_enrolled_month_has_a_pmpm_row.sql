{# Every payer, plan and month with a member month has its 'all' row in claims_pmpm, with member months (or withheld). #}
with

enrolled as (

    select distinct payer, plan, month from {{ ref('fct_member_months') }}

),

pmpm as (

    select * from {{ ref('claims_pmpm') }} where claim_type = 'all'

)

select enrolled.payer, enrolled.plan, enrolled.month
from enrolled
left join pmpm
    on enrolled.payer = pmpm.payer
    and enrolled.plan = pmpm.plan
    and enrolled.month = pmpm.month
where pmpm.month is null
    or (pmpm.member_months = 0 and not pmpm.is_member_months_suppressed)
