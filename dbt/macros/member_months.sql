{#
    Eligibility follows what changed (decision 0028, amendment of 2026-12-06 evening). A payer's monthly member
    file re-sends every enrolled member; int_current_eligibility still records each member's latest arrival (a
    late file is judged against it), but keeps the built_at of the version it held when the spans are the same,
    so that the models built on it rewrite only the members whose months changed, and add the months that open
    spans grew by.
#}


{#
    SQL: one row per member of `relation` (spans shaped as int_current_eligibility) with a digest of the spans as
    sent (an open span without its end, which moves with the file), in file order (the order decides between spans
    that start on the same day: a reordered file counts as a change); open_end: the last day of its open spans (the file's month);
    closed_end: the latest end of its other spans; built_at: when it last changed (a held version only).
#}
{% macro eligibility_versions(relation, filter=none) -%}
    select
        payer,
        member_id,
        md5(string_agg(
            concat_ws('|', plan, coalesce(sex, '<null>'), coalesce(to_char(birth_date, 'YYYY-MM-DD'), '<null>'),
                to_char(enrollment_start_date, 'YYYY-MM-DD'),
                case when is_open_ended then 'open' else to_char(enrollment_end_date, 'YYYY-MM-DD') end),
            ';' order by source_row_number
        )) as spans_digest,
        max(enrollment_end_date) filter (where is_open_ended) as open_end,
        max(enrollment_end_date) filter (where not is_open_ended) as closed_end
        {%- if filter %},
        max(built_at) as built_at
        {%- endif %}
    from {{ relation }}
    {% if filter %}where {{ filter }}{% endif %}
    group by 1, 2
{%- endmacro %}


{#
    Pre-hook of fct_member_months on an incremental run: remove the months of the members int_current_eligibility
    changed since this model's latest build (written_since_last_build, the same instant the model's SQL reads:
    nothing is written between them), and of the members it no longer holds. Members go from it only
    when an eligibility file is set aside (its post-hook delete_rows_of_unloaded_files), and finding them reads
    every row here: that part runs only while the ledger has an eligibility file that is not loaded.
#}
{% macro delete_changed_members() -%}
    {%- if is_incremental() -%}
    {%- set changed = written_since_last_build() -%}
    delete from {{ this }} as existing_rows
    using {{ ref('int_current_eligibility') }} as spans
    where spans.payer = existing_rows.payer
        and spans.member_id = existing_rows.member_id
        and {{ changed | replace("built_at", "spans.built_at") }};
    {% if unloaded_files_exist('eligibility') -%}
    delete from {{ this }} as existing_rows
    where not exists (
        select from {{ ref('int_current_eligibility') }} as spans
        where spans.payer = existing_rows.payer and spans.member_id = existing_rows.member_id
    )
    {%- endif -%}
    {%- endif -%}
{%- endmacro %}


{# Whether the ledger has a file of the drop type that is not loaded (superseded, or set aside by hand). #}
{% macro unloaded_files_exist(drop_type) -%}
    {%- set query -%}
        select 1 from {{ ref('stg_ops__file_ledger') }}
        where drop_type = '{{ drop_type }}' and not is_loaded
        limit 1
    {%- endset -%}
    {{ return(execute and run_query(query) | length > 0) }}
{%- endmacro %}


{#
    Pre-hook of dim_members on an incremental run: remove the members with neither spans in int_current_eligibility
    nor a claim in fct_claims (a file set aside, a claim re-sent under another member). The spans are looked up
    for every member (a hash of one row per span); the claims, through fct_claims' member_key index, only for
    the members without spans.
#}
{% macro delete_members_gone() -%}
    {%- if is_incremental() -%}
    delete from {{ this }} as existing_rows
    where not exists (
        select from {{ ref('int_current_eligibility') }} as spans
        where spans.payer = existing_rows.payer and spans.member_id = existing_rows.member_id
    )
    and not exists (
        select from {{ ref('fct_claims') }} as claims
        where claims.member_key = existing_rows.member_key
            and claims.payer = existing_rows.payer
            and claims.member_id = existing_rows.member_id
    )
    {%- endif -%}
{%- endmacro %}


{#
    Pre-hook of int_current_eligibility: no nested loops in its transaction. The planner has no statistics for the
    batch's CTEs, reads the winners of a 70,000-member night as one row, and joined them to the held versions by
    nested loops over CTE scans (70,000 x 70,000: over two minutes of a nightly at a third of the issue's size,
    stopped; 1.8 s with hash joins). Its index lookups of the held versions of the batch's members become hash
    joins over the table's rows, one per span.
#}
{% macro no_nested_loops() -%}
    set local enable_nestloop = off
{%- endmacro %}
