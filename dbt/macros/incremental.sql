{#
    The filter an incremental fact puts on its staging rows: `<date_column> in (<days>)`, the reporting
    days it must rebuild whole, for a drop type whose rows take their date from their file's reporting day:
    - a day with a loaded file none of whose rows are in the fact yet: a new day, a re-delivered day
      (the newer file supersedes the older one) or a file that loaded late;
    - a day with rows of a file that is no longer loaded (superseded, or set aside by hand).
    Rebuilding a whole day keeps the ids a full build gives: the ordinal among identical rows counts
    within a day. A loaded file that resolves to no fact row at all is looked at again on every run (its
    day is rebuilt, to the same result).
    The days are looked up when the model runs and written into its SQL as literals: with a subquery
    instead, Postgres cannot tell that it keeps one day in a hundred, and types and joins every staging
    row before filtering. The lookup reads the ledger and the fact's file_id index only.
#}
{% macro reporting_days_filter(drop_type, date_column, file_ids_column=none) -%}
    {#- A daily rollup keeps the ids of the files behind each row in an array column instead of a file_id, which
        no index serves: it is looked for among the rows of the file's own day (the rollup's index on its day). -#}
    {%- set in_this = ('existing_rows.' ~ date_column ~ ' = file_ledger.reported_date and file_ledger.file_id = any(existing_rows.'
                       ~ file_ids_column ~ ')') if file_ids_column
                      else 'existing_rows.file_id = file_ledger.file_id' -%}
    {%- set days_query -%}
        select file_ledger.reported_date
        from {{ ref('stg_ops__file_ledger') }} as file_ledger
        where file_ledger.drop_type = '{{ drop_type }}'
            and file_ledger.is_loaded
            and file_ledger.reported_date is not null
            and not exists (
                select from {{ this }} as existing_rows
                where {{ in_this }}
            )

        union

        select existing_rows.{{ date_column }}
        from {{ this }} as existing_rows
        inner join {{ ref('stg_ops__file_ledger') }} as file_ledger
            on {{ in_this }}
        where file_ledger.drop_type = '{{ drop_type }}'
            and not file_ledger.is_loaded
            and existing_rows.{{ date_column }} is not null

        order by 1
    {%- endset -%}
    {%- set days = run_query(days_query).columns[0].values() if execute else [] -%}
    {%- if days -%}
        {{ date_column }} in (
            {%- for day in days %}date '{{ day }}'{% if not loop.last %}, {% endif %}{% endfor -%}
        )
    {%- else -%}
        false
    {%- endif -%}
{%- endmacro %}


{#
    Post-hook of the incremental facts and daily rollups (a rollup names its file ids and day columns): rows of
    files that are no longer loaded go. delete+insert replaces the days that have rows in the new batch; a
    re-delivered day whose new file resolves to no row at all (or a file set aside with no successor) has
    none, so its old rows are removed here. Never matches anything after a full build.
#}
{% macro delete_rows_of_unloaded_files(drop_type, file_ids_column=none, date_column=none) -%}
    delete from {{ this }} as existing_rows
    using {{ ref('stg_ops__file_ledger') }} as file_ledger
    where {{ ('existing_rows.' ~ date_column ~ ' = file_ledger.reported_date and file_ledger.file_id = any(existing_rows.'
              ~ file_ids_column ~ ')') if file_ids_column
             else 'existing_rows.file_id = file_ledger.file_id' }}
        and file_ledger.drop_type = '{{ drop_type }}'
        and not file_ledger.is_loaded
{%- endmacro %}


{#
    delete+insert as dbt writes it, except the delete: dbt's `where day in (select distinct day from <batch>)`
    is planned before the batch's size is known, so Postgres hashes the batch and scans the whole target (every
    fact row, every night: 4 s on 4,000,000 records). `= any(array(...))` hands the planner an array it looks
    up through the target's index on the key, so the delete reads only the rows it removes. Single-column
    keys only (every incremental model here); others take dbt's own SQL.
#}
{% macro postgres__get_delete_insert_merge_sql(target, source, unique_key, dest_columns, incremental_predicates) -%}
    {%- set key = unique_key[0] if unique_key is not string and unique_key | length == 1 else unique_key -%}
    {%- if key is not string or incremental_predicates -%}
        {{ return(default__get_delete_insert_merge_sql(target, source, unique_key, dest_columns, incremental_predicates)) }}
    {%- endif -%}
    {%- set dest_cols_csv = get_quoted_csv(dest_columns | map(attribute='name')) -%}
    delete from {{ target }} as DBT_INTERNAL_DEST
    where {{ key }} = any(array(
        select distinct DBT_INTERNAL_SOURCE.{{ key }}
        from {{ source }} as DBT_INTERNAL_SOURCE
    ));

    insert into {{ target }} ({{ dest_cols_csv }})
    (
        select {{ dest_cols_csv }}
        from {{ source }}
    )
{%- endmacro %}
