{# One row per trust per quarter per consultant specialty: average daily beds occupied by its patients. #}
with

specialty as (

    select * from {{ ref('stg_nhs__kh03_specialty') }}

),

final as (

    select
        org_code,
        financial_year,
        quarter,
        period_start,
        period_end,
        region_code,
        specialty_code,
        specialty_name,
        beds_occupied,
        file_id,
        cast('{{ run_started_at.isoformat() }}' as timestamptz) as built_at
    from specialty

)

select * from final
