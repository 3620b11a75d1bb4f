{#
    STAND-IN (issue 15): one row per claim line of every loaded claims file (all arrivals), in the columns of
    docs/proposals/0002-claims-models-interface.md, over today's one-line-per-claim raw.claims. The claims-load
    branch replaces this file with the real model (Tuva layout, every line) when it merges.
#}
with

claims as (

    select * from {{ source('raw', 'claims') }}

),

file_ledger as (

    select * from {{ source('ops', 'file_ledger') }}

),

loaded_claims as (

    select
        claims.*,
        file_ledger.key,
        file_ledger.layout,
        file_ledger.period_start,
        file_ledger.finished_at
    from claims
    inner join file_ledger
        on claims._file_id = file_ledger.file_id
    where file_ledger.status = 'loaded'
        and file_ledger.drop_type = 'claims'

),

final as (

    select
        _file_id as file_id,
        _row_number as source_row_number,
        finished_at as loaded_at,
        period_start as reporting_month,
        substring(key from 'provider=([^/]+)/') as payer,
        layout,
        claim_id,
        1 as claim_line_number,
        member_id,
        provider_id as rendering_npi,
        cast(null as text) as billing_npi,
        lower(claim_type) as claim_type,
        lower(claim_status) as claim_status,
        claim_date,
        service_from_date,
        coalesce(service_to_date, service_from_date) as service_to_date,
        admit_date,
        discharge_date,
        upper(diagnosis_code) as diagnosis_code_1,
        array_remove(array[upper(diagnosis_code)], null) as diagnosis_codes,
        upper(procedure_code) as procedure_code,
        cast(1 as numeric) as units,
        billed_amount,
        allowed_amount,
        paid_amount
    from loaded_claims

)

select * from final
