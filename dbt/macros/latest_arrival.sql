{#
    The incremental claims models keep each key's latest arrival (a claim within its payer: all its lines; a
    member within its payer: all their spans) from files that can arrive in any month. A build reads:
    - the rows of the loaded files of the drop type that have no row in the model yet (new files, a file that
      loaded late, and a file whose every key lost to later arrivals, which is read again each time, to the same
      result); their ids are looked up first and written into the SQL as literals, so that the staging view
      finds their rows through the raw table's key (`_file_id`, ...) instead of reading every row;
    - and, only when the model holds rows of a file that is no longer loaded (superseded, or set aside by hand),
      every loaded arrival of those rows' keys: their current version has to be found again among the older
      ones. That reads the whole staging view, and happens only on the nights such a file exists.
    The model compares the batch's arrivals with the version it holds (latest_arrivals below) and writes only the
    keys whose winner is in the batch; the post-hook delete_rows_of_unloaded_files removes keys left with no
    loaded arrival at all. Key values never appear in the SQL (they may be a member's): subqueries name them.
#}
{% macro latest_arrival_batch_filter(drop_type, key_columns) -%}
    {%- set predicates = [] -%}
    {%- set file_ids = new_loaded_files(drop_type) -%}
    {%- if file_ids -%}
        {%- do predicates.append('file_id in (' ~ file_ids | join(', ') ~ ')') -%}
    {%- endif -%}
    {%- if execute and run_query(keys_of_unloaded_files(drop_type, key_columns) ~ ' limit 1') | length > 0 -%}
        {%- do predicates.append('(' ~ key_columns | join(', ') ~ ') in (' ~ keys_of_unloaded_files(drop_type, key_columns) ~ ')') -%}
    {%- endif -%}
    {{ '(' ~ predicates | join(' or ') ~ ')' if predicates else 'false' }}
{%- endmacro %}


{# The ids of the loaded files of the drop type that have no row in the model yet (the batch's files). #}
{% macro new_loaded_files(drop_type) -%}
    {%- set new_files -%}
        select file_ledger.file_id
        from {{ ref('stg_ops__file_ledger') }} as file_ledger
        where file_ledger.drop_type = '{{ drop_type }}'
            and file_ledger.is_loaded
            and not exists (select from {{ this }} as existing_rows where existing_rows.file_id = file_ledger.file_id)
        order by 1
    {%- endset -%}
    {{ return(run_query(new_files).columns[0].values() if execute else []) }}
{%- endmacro %}


{# An append-only model's batch: the rows of the new loaded files of the drop type (new_loaded_files). #}
{% macro new_files_filter(drop_type) -%}
    {%- set file_ids = new_loaded_files(drop_type) -%}
    {{ 'file_id in (' ~ file_ids | join(', ') ~ ')' if file_ids else 'false' }}
{%- endmacro %}


{# The keys of the model's rows whose file is no longer loaded (found through the model's file_id index). #}
{% macro keys_of_unloaded_files(drop_type, key_columns) -%}
    select distinct {% for column in key_columns %}existing_rows.{{ column }}{% if not loop.last %}, {% endif %}{% endfor %}
    from {{ this }} as existing_rows
    inner join {{ ref('stg_ops__file_ledger') }} as file_ledger
        on existing_rows.file_id = file_ledger.file_id
    where file_ledger.drop_type = '{{ drop_type }}'
        and not file_ledger.is_loaded
{%- endmacro %}


{#
    SQL: one row per key of `arrivals` (key columns, file_id, loaded_at: one row per key and file of the batch)
    with the file of its latest arrival (loaded_at, then file_id). On an incremental run the version the model
    holds takes part, while its file is loaded: when it is the latest, the key has no batch file and is left as it
    is (the batch's lines join no row of it).
#}
{% macro latest_arrivals(arrivals, key_columns) -%}
    {%- set key = key_columns | join(', ') -%}
    select {{ key }}, file_id
    from (
        select
            candidates.*,
            row_number() over (partition by {{ key }} order by loaded_at desc, file_id desc) as arrival_rank
        from (
            select {{ key }}, file_id, loaded_at from {{ arrivals }}
            {%- if is_incremental() %}
            union
            select distinct {% for column in key_columns %}existing_rows.{{ column }}, {% endfor %}existing_rows.file_id, existing_rows.loaded_at
            from {{ this }} as existing_rows
            inner join {{ ref('stg_ops__file_ledger') }} as file_ledger
                on existing_rows.file_id = file_ledger.file_id
                and file_ledger.is_loaded
            where ({% for column in key_columns %}existing_rows.{{ column }}{% if not loop.last %}, {% endif %}{% endfor %}) in (select {{ key }} from {{ arrivals }})
            {%- endif %}
        ) as candidates
    ) as ranked
    where arrival_rank = 1
{%- endmacro %}


{#
    The filter a model built from an incremental claims model puts on it: the rows written (built_at) after this
    model's latest build, as a literal the upstream's built_at index looks up. Those are whole keys (the upstream
    rewrites every row of a key it writes). Upstream and this model are built by the same dbt invocations in
    order (one marts build at a time: the dbt_build pool), so the upstream's rows of a later run have a later
    built_at; a model run on its own takes in every batch written since its own last run.
#}
{% macro written_since_last_build() -%}
    {%- set latest = run_query('select max(built_at) from ' ~ this).columns[0].values()[0] if execute else none -%}
    {{ "built_at > timestamptz '" ~ latest.isoformat() ~ "'" if latest is not none else 'true' }}
{%- endmacro %}


{#
    Post-hook of the incremental claims models: fresh statistics for the models built from them. Without it the
    planner knows only the built_at of the rows that were there at the last analyze, reads `built_at > <the last
    build>` (written_since_last_build) as one row, and joins a batch of 66,000 claim lines to itself in a nested
    loop (minutes instead of a second). A sample of 30,000 rows: a fraction of a second.
#}
{% macro analyze_this() -%}
    analyze {{ this }}
{%- endmacro %}
