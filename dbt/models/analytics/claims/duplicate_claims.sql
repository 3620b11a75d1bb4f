{#
    One row per current claim and kind of duplicate it takes part in:
    * exact_resend: the same claim (payer, claim_id) with the same content (every line, every column but the
      file's lineage) arrived in more than one file (staging keeps every arrival). The marts count it once.
    * suspected_duplicate: another current claim id of the same payer with the same member, rendering provider,
      first day of service and procedure code. Every claim of such a group is listed; the first (claim date,
      then arrival, then claim id) is the original, the others fire the `duplicate` anomaly rule.
    Claim-level and de-identified (member_key only). Rules: docs/claims-anomaly-rules.md.
#}
-- No parallel workers, for this model's transaction: in a parallel plan each worker builds the whole hash of the
-- services billed twice from every claim (the inner side of the join is not shared), so two workers and the leader
-- did that work three times. Serial took 2.5 s against 3.0-3.3 s alone at 1,000,000 lines, on one core instead of
-- three, and this model is on the night's longest chain (fct_claims, duplicate_claims, claim_anomaly_scores), where
-- the other models need the cores. (512 MB of work_mem instead of 64 made no difference: 2.5 against 2.6 s.)
{{ config(pre_hook="set local max_parallel_workers_per_gather = 0") }}
with

-- Read twice (the service groups, then the details of the few claims listed): NOT MATERIALIZED keeps Postgres
-- from copying all of fct_claims aside, so the details come through its (payer, claim_id) index.
claims as not materialized (

    select * from {{ ref('fct_claims') }}

),

-- One row per claim per file that sent it, with the digest of its content (int_claim_arrivals).
arrivals as (

    select * from {{ ref('int_claim_arrivals') }}

),

identical_arrivals as (

    select
        payer,
        claim_id,
        content_digest,
        count(*) as copy_count,
        array_agg(file_id order by loaded_at, file_id) as file_ids
    from arrivals
    group by 1, 2, 3
    having count(*) > 1

),

-- The version sent most often (then the latest) when several versions of a claim were re-sent.
exact_resends as (

    select distinct on (payer, claim_id)
        payer,
        claim_id,
        'exact_resend' as duplicate_type,
        claim_id as original_claim_id,
        copy_count,
        file_ids
    from identical_arrivals
    order by payer, claim_id, copy_count desc, file_ids[cardinality(file_ids)] desc

),

-- The services billed under more than one claim id (every key column is required by the contract, so none is
-- null): grouped first, so that only their claims are sorted for the window below, not every claim.
duplicate_services as (

    select
        payer,
        member_key,
        rendering_npi,
        service_from_date,
        procedure_code
    from claims
    where rendering_npi is not null
        and procedure_code is not null
    group by 1, 2, 3, 4, 5
    having count(*) > 1

),

service_groups as (

    select
        claims.payer,
        claims.claim_id,
        claims.file_id,
        count(*) over same_service as group_claim_count,
        first_value(claims.claim_id) over (
            same_service order by claims.claim_date, claims.loaded_at, claims.file_id, claims.claim_id
            rows between unbounded preceding and unbounded following
        ) as original_claim_id
    from claims
    inner join duplicate_services
        on claims.payer = duplicate_services.payer
        and claims.member_key = duplicate_services.member_key
        and claims.rendering_npi = duplicate_services.rendering_npi
        and claims.service_from_date = duplicate_services.service_from_date
        and claims.procedure_code = duplicate_services.procedure_code
    window same_service as (
        partition by claims.payer, claims.member_key, claims.rendering_npi, claims.service_from_date,
            claims.procedure_code
    )

),

suspected_duplicates as (

    select
        payer,
        claim_id,
        'suspected_duplicate' as duplicate_type,
        original_claim_id,
        group_claim_count as copy_count,
        array[file_id] as file_ids
    from service_groups  -- only groups of two or more claims (duplicate_services)

),

duplicates as (

    select * from exact_resends
    union all
    select * from suspected_duplicates

),

final as (

    select
        duplicates.payer,
        duplicates.claim_id,
        duplicates.duplicate_type,
        claims.member_key,
        claims.rendering_npi,
        claims.service_from_date,
        claims.procedure_code,
        duplicates.original_claim_id,
        case when duplicates.duplicate_type = 'suspected_duplicate'
            then duplicates.claim_id = duplicates.original_claim_id end as is_original,
        cast(duplicates.copy_count as integer) as copy_count,
        cast(duplicates.file_ids as bigint[]) as file_ids,
        cast('{{ run_started_at.isoformat() }}' as timestamptz) as built_at
    from duplicates
    inner join claims
        on duplicates.payer = claims.payer
        and duplicates.claim_id = claims.claim_id

)

select * from final
