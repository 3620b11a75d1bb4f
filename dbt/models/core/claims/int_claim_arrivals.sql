{#
    One row per claim per loaded file that sent it, with a digest of everything the file said about the claim:
    every line, every column but the file's lineage. duplicate_claims finds exact re-sends among them. Every
    arrival is kept, not only the current version, so the digests of three years of files are not computed again
    each night.

    Incremental (append): a build reads the lines of the loaded claims files that have no row here yet
    (macros/latest_arrival.sql, new_files_filter); the post-hook removes the rows of files no longer loaded.
#}
{{
    config(
        materialized='incremental',
        incremental_strategy='append',
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
    where {{ new_files_filter('claims') }}
    {% endif %}

),

final as (

    select
        payer,
        claim_id,
        file_id,
        min(loaded_at) as loaded_at,
        -- A JSON array per line keeps nulls in their places (concat_ws would drop them: a null admission
        -- date and a null discharge date would then read alike).
        md5(string_agg(
            cast(jsonb_build_array(
                claim_line_number, member_id, rendering_npi, billing_npi, claim_type, claim_status, claim_date,
                service_from_date, service_to_date, admit_date, discharge_date, diagnosis_codes, procedure_code,
                -- 100 and 100.00 are the same amount: trailing zeros are the file's spelling, not its content.
                trim_scale(units), trim_scale(billed_amount), trim_scale(allowed_amount), trim_scale(paid_amount)
            ) as text),
            '#' order by claim_line_number, source_row_number
        )) as content_digest,
        cast('{{ run_started_at.isoformat() }}' as timestamptz) as built_at
    from claim_lines
    group by 1, 2, 3

)

select * from final
