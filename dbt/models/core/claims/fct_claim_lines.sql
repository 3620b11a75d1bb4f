{#
    One row per claim line of the current version of each claim: latest arrival wins. A claim is identified
    within its payer; the file that sent it last (loaded_at, then file_id) holds its current version, and every
    line of an earlier version goes, whether or not the new version has that line. A line sent twice in one
    file keeps its later row.

    Incremental (delete+insert on the claim): a run reads the lines of the files not in the table yet and writes
    the claims whose latest arrival they hold, whatever month the earlier version came in (macros/
    latest_arrival.sql; decision 0028). built_at says which run wrote a row.
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
{# The ledger is read only on incremental runs (the batch's files, the post-hook): declared for dbt's ordering. #}
-- depends_on: {{ ref('stg_ops__file_ledger') }}

with

claim_lines as (

    select * from {{ ref('stg_claims__claim_lines') }}
    {% if is_incremental() %}
    where {{ latest_arrival_batch_filter('claims', ['payer', 'claim_id']) }}
    {% endif %}

),

arrivals as (

    select distinct
        payer,
        claim_id,
        file_id,
        loaded_at
    from claim_lines

),

latest_arrivals as (

    {{ latest_arrivals('arrivals', ['payer', 'claim_id']) }}

),

current_lines as (

    select
        claim_lines.*,
        row_number() over (
            partition by claim_lines.payer, claim_lines.claim_id, claim_lines.claim_line_number
            order by claim_lines.source_row_number desc
        ) as row_rank
    from claim_lines
    inner join latest_arrivals
        on claim_lines.payer = latest_arrivals.payer
        and claim_lines.claim_id = latest_arrivals.claim_id
        and claim_lines.file_id = latest_arrivals.file_id

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
        paid_amount,
        cast('{{ run_started_at.isoformat() }}' as timestamptz) as built_at
    from current_lines
    where row_rank = 1

)

select * from final
