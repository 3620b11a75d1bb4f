{#
    One row per enrolment span of each member's current eligibility: the spans of the latest loaded file that
    sent the member (loaded_at, then file_id), so that a corrected member file replaces the member's earlier
    spans. Spans sent twice in that file are kept once.

    Incremental (delete+insert on the member): a run reads the spans of the files not in the table yet and
    writes the members whose latest arrival they hold (macros/latest_arrival.sql; decision 0028). built_at says
    when the member's months last changed other than by growing: a member re-sent with the same spans keeps the
    built_at of the version held, also when an open span's end moved on to the later file's month, as long as no
    month it held changes (every closed span ended by the held open end). fct_member_months and dim_members
    rewrite the members whose built_at is newer than their own last build, and extend the others' open spans.
#}
{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key=['payer', 'member_id'],
        on_schema_change='append_new_columns',
        indexes=[
            {'columns': ['payer', 'member_id']},
            {'columns': ['file_id']},
            {'columns': ['built_at']},
        ],
        pre_hook=["{{ no_nested_loops() }}"],
        post_hook=["{{ delete_rows_of_unloaded_files('eligibility') }}", "{{ analyze_this() }}"],
    )
}}
{# The ledger is read only on incremental runs (the batch's files, the post-hook): declared for dbt's ordering. #}
-- depends_on: {{ ref('stg_ops__file_ledger') }}
with

spans as (

    select * from {{ ref('stg_claims__eligibility') }}
    {% if is_incremental() %}
    where {{ latest_arrival_batch_filter('eligibility', ['payer', 'member_id']) }}
    {% endif %}

),

arrivals as (

    select distinct
        payer,
        member_id,
        file_id,
        loaded_at
    from spans

),

latest_arrivals as (

    {{ latest_arrivals('arrivals', ['payer', 'member_id']) }}

),

current_spans as (

    select distinct on (spans.payer, spans.member_id, spans.enrollment_start_date, spans.enrollment_end_date, spans.plan)
        spans.payer,
        spans.member_id,
        {{ surrogate_key(['spans.payer', 'spans.member_id']) }} as member_key,
        spans.plan,
        spans.sex,
        spans.birth_date,
        spans.enrollment_start_date,
        spans.enrollment_end_date,
        spans.is_open_ended,
        spans.file_id,
        spans.source_row_number,
        spans.loaded_at
    from spans
    inner join latest_arrivals
        on spans.payer = latest_arrivals.payer
        and spans.member_id = latest_arrivals.member_id
        and spans.file_id = latest_arrivals.file_id
    order by spans.payer, spans.member_id, spans.enrollment_start_date, spans.enrollment_end_date, spans.plan,
        spans.source_row_number desc

),

{% if is_incremental() %}
new_versions as (

    {{ eligibility_versions('current_spans') }}

),

held_versions as (

    {{ eligibility_versions(this, filter='(payer, member_id) in (select payer, member_id from new_versions)') }}

),

-- The held version's months stay as they are: the same spans in the same order, an open end that did not move
-- back, and no closed span ending after the held open end (whose later months an open span's growth could
-- take over); the months after the held ones are the new version's to add.
unchanged_members as (

    select
        held_versions.payer,
        held_versions.member_id,
        held_versions.built_at
    from held_versions
    inner join new_versions
        on held_versions.payer = new_versions.payer
        and held_versions.member_id = new_versions.member_id
        and held_versions.spans_digest = new_versions.spans_digest
    where held_versions.open_end is null
        or (new_versions.open_end >= held_versions.open_end
            and coalesce(held_versions.closed_end <= held_versions.open_end, true))

),
{% endif %}

final as (

    select
        current_spans.*,
        {% if is_incremental() -%}
        coalesce(unchanged_members.built_at, cast('{{ run_started_at.isoformat() }}' as timestamptz)) as built_at
        {%- else -%}
        cast('{{ run_started_at.isoformat() }}' as timestamptz) as built_at
        {%- endif %}
    from current_spans
    {% if is_incremental() -%}
    left join unchanged_members
        on current_spans.payer = unchanged_members.payer
        and current_spans.member_id = unchanged_members.member_id
    {%- endif %}

)

select * from final
