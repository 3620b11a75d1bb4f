{# One row per valid claim row of a loaded payer file, in the canonical layout; the payer is the file's layout. #}
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
        file_ledger.layout,
        file_ledger.period_start
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
        layout as payer,
        claim_id,
        member_id,
        provider_id,
        claim_date,
        service_from_date,
        coalesce(service_to_date, service_from_date) as service_to_date,
        admit_date,
        discharge_date,
        upper(diagnosis_code) as diagnosis_code,
        upper(procedure_code) as procedure_code,
        billed_amount,
        allowed_amount,
        paid_amount,
        lower(claim_status) as claim_status,
        lower(claim_type) as claim_type,
        period_start as reporting_month,
        _loaded_at as loaded_at
    from loaded_claims

)

select * from final
