{#
    A current claim's totals are the sums of its current lines, and all of those lines come from one file. Checks
    the claims either table wrote in its latest build (every claim on a full refresh; macros/test_scope.sql),
    each with all its rows in both tables (through their (payer, claim_id, ...) indexes).
#}
with

written as (

    select payer, claim_id from {{ test_scope(ref('fct_claims')) }} as written_claims
    union
    select payer, claim_id from {{ test_scope(ref('fct_claim_lines')) }} as written_lines

),

claims as (

    select * from {{ ref('fct_claims') }}
    where (payer, claim_id) in (select payer, claim_id from written)

),

lines as (

    select
        payer,
        claim_id,
        count(*) as line_count,
        count(distinct file_id) as files,
        sum(billed_amount) as billed_amount,
        sum(allowed_amount) as allowed_amount,
        sum(paid_amount) as paid_amount
    from {{ ref('fct_claim_lines') }}
    where (payer, claim_id) in (select payer, claim_id from written)
    group by 1, 2

)

select claims.payer, claims.claim_id
from claims
full outer join lines
    on claims.payer = lines.payer
    and claims.claim_id = lines.claim_id
where claims.claim_id is null
    or lines.claim_id is null
    or lines.files <> 1
    or claims.line_count <> lines.line_count
    or claims.billed_amount is distinct from lines.billed_amount
    or claims.allowed_amount is distinct from lines.allowed_amount
    or claims.paid_amount is distinct from lines.paid_amount
