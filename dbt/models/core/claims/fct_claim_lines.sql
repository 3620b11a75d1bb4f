{#
    STAND-IN (issue 15): one row per line of the current version of each claim: the lines of the latest loaded
    file that sent the claim (loaded_at, then file_id), so a re-sent claim replaces every line of the earlier
    version. Columns as docs/proposals/0002-claims-models-interface.md; replaced by the claims-load branch.
#}
with

claim_lines as (

    select * from {{ ref('stg_claims__claim_lines') }}

),

ranked_files as (

    select
        *,
        dense_rank() over (
            partition by payer, claim_id order by loaded_at desc, file_id desc
        ) as arrival_rank
    from claim_lines

),

final as (

    select
        file_id,
        source_row_number,
        loaded_at,
        reporting_month,
        payer,
        claim_id,
        claim_line_number,
        member_id,
        {{ surrogate_key(['payer', 'member_id']) }} as member_key,
        rendering_npi,
        billing_npi,
        claim_type,
        claim_status,
        claim_date,
        service_from_date,
        service_to_date,
        admit_date,
        discharge_date,
        diagnosis_code_1,
        diagnosis_codes,
        procedure_code,
        units,
        billed_amount,
        allowed_amount,
        paid_amount
    from ranked_files
    where arrival_rank = 1

)

select * from final
