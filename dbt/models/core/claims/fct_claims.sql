{#
    STAND-IN (issue 15): one row per current claim (payer, claim_id), totals from its current lines; the
    attributes of the lowest line. Columns as docs/proposals/0002-claims-models-interface.md; replaced by the
    claims-load branch.
#}
with

claim_lines as (

    select * from {{ ref('fct_claim_lines') }}

),

first_lines as (

    select distinct on (payer, claim_id)
        *
    from claim_lines
    order by payer, claim_id, claim_line_number

),

totals as (

    select
        payer,
        claim_id,
        min(service_from_date) as service_from_date,
        max(service_to_date) as service_to_date,
        count(*) as line_count,
        sum(units) as units,
        sum(billed_amount) as billed_amount,
        sum(allowed_amount) as allowed_amount,
        sum(paid_amount) as paid_amount
    from claim_lines
    group by 1, 2

),

final as (

    select
        first_lines.payer,
        first_lines.claim_id,
        first_lines.member_id,
        first_lines.member_key,
        first_lines.rendering_npi,
        first_lines.billing_npi,
        first_lines.claim_type,
        first_lines.claim_status,
        first_lines.claim_date,
        totals.service_from_date,
        totals.service_to_date,
        first_lines.admit_date,
        first_lines.discharge_date,
        first_lines.diagnosis_code_1,
        first_lines.procedure_code,
        totals.line_count,
        totals.units,
        totals.billed_amount,
        totals.allowed_amount,
        totals.paid_amount,
        cast(date_trunc('month', totals.service_from_date) as date) as service_month,
        first_lines.reporting_month,
        first_lines.file_id,
        first_lines.loaded_at
    from first_lines
    inner join totals
        on first_lines.payer = totals.payer
        and first_lines.claim_id = totals.claim_id

)

select * from final
