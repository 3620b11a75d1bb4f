{#
    One row per current claim (payer, claim_id): its lines' totals, its span of service, and the claim-level
    fields of its lowest line.

    Incremental (delete+insert on the claim): a run reads the claims whose lines fct_claim_lines wrote since this
    table's last build (macros/latest_arrival.sql; decision 0028).
#}
{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key=['payer', 'claim_id'],
        on_schema_change='append_new_columns',
        post_hook=["{{ delete_rows_of_unloaded_files('claims') }}", "{{ analyze_this() }}"],
    )
}}
{# The ledger is read only on incremental runs (the post-hook): declared for dbt's ordering. #}
-- depends_on: {{ ref('stg_ops__file_ledger') }}
with

claim_lines as (

    select * from {{ ref('fct_claim_lines') }}
    {% if is_incremental() %}
    where {{ written_since_last_build() }}
    {% endif %}

),

first_lines as (

    select distinct on (payer, claim_id)
        payer,
        claim_id,
        member_id,
        member_key,
        rendering_npi,
        billing_npi,
        claim_type,
        claim_status,
        claim_date,
        diagnosis_code_1,
        procedure_code,
        reporting_month,
        file_id,
        loaded_at
    from claim_lines
    order by payer, claim_id, claim_line_number

),

totals as (

    select
        payer,
        claim_id,
        min(service_from_date) as service_from_date,
        max(service_to_date) as service_to_date,
        min(admit_date) as admit_date,
        max(discharge_date) as discharge_date,
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
        totals.admit_date,
        totals.discharge_date,
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
        first_lines.loaded_at,
        cast('{{ run_started_at.isoformat() }}' as timestamptz) as built_at
    from first_lines
    inner join totals
        on first_lines.payer = totals.payer
        and first_lines.claim_id = totals.claim_id

)

select * from final
