{#
    One row per valid claim line of every loaded claims file (every arrival: a claim re-sent in a later file is
    here once per file; dbt/models/core/claims keeps the latest). The payer is the key's provider= folder; the
    payer layouts' one line per claim reads as line 1 of 1 unit.
#}
with

claim_lines as (

    select * from {{ source('raw', 'claims') }}

),

file_ledger as (

    select * from {{ source('ops', 'file_ledger') }}

),

loaded_claim_lines as (

    select
        claim_lines.*,
        file_ledger.key,
        file_ledger.layout,
        file_ledger.period_start
    from claim_lines
    inner join file_ledger
        on claim_lines._file_id = file_ledger.file_id
    where file_ledger.status = 'loaded'
        and file_ledger.drop_type = 'claims'

),

final as (

    select
        _file_id as file_id,
        _row_number as source_row_number,
        _loaded_at as loaded_at,
        period_start as reporting_month,
        substring(key from '/provider=([^/]+)/') as payer,
        layout,
        claim_id,
        coalesce(claim_line_number, 1) as claim_line_number,
        member_id,
        provider_id as rendering_npi,
        billing_npi,
        lower(claim_type) as claim_type,
        lower(claim_status) as claim_status,
        claim_date,
        service_from_date,
        coalesce(service_to_date, service_from_date) as service_to_date,
        admit_date,
        discharge_date,
        upper(diagnosis_code) as diagnosis_code_1,
        array_remove(array[
            upper(diagnosis_code)
            {%- for n in range(2, 26) %},
            upper(diagnosis_code_{{ n }})
            {%- endfor %}
        ], null) as diagnosis_codes,
        upper(procedure_code) as procedure_code,
        coalesce(units, 1) as units,
        billed_amount,
        allowed_amount,
        paid_amount
    from loaded_claim_lines

)

select * from final
