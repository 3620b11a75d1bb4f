{#
    Tests on the large relations check the rows a build adds, not every row every night.

    dbt calls get_where_subquery(relation) for the model side of every generic test (not_null, unique,
    accepted_values, relationships, between, expression_is_true ...). For a relation named in the var
    `test_new_rows_only` (dbt_project.yml) it narrows the test to:
    - `new_files_of: <drop type>, until_in: <fact>`: a staging view's rows from loaded files of that drop
      type that are not in the fact yet. Its tests run before the fact is built, so these are exactly the
      files this build is about to add.
    - `latest_batch: <column>`: a fact's rows written by its latest build (the column holds the build's
      start time; a full build writes every row in one batch).
    Older rows were tested when they were written, and an incremental build does not touch them, except
    through the dimensions, which are rebuilt whole: a patient gone from dim_patients orphans old fact rows.
    So a `relationships` test on a column named in the rule's `relationships_by_index` reads the column's
    distinct values over the whole relation, found through an index that leads with the column (one index
    descent per value: a few thousand patients, not millions of rows; macro distinct_values). A fact's
    facility is its patient's (patient_id is an md5 over the facility; assert_facts_patient_belongs_to_facility
    checks each batch) and dim_patients' facilities are tested whole, so facility_id needs only the batch.
    Every row is tested on a full refresh, when the fact does not exist yet, and with `--vars 'test_all_rows:
    true'` (run that after changing a test). A test's own `where` config still applies on top.
    Singular tests call test_scope(ref(...)) for the same narrowing.
#}
{% macro postgres__get_where_subquery(relation) -%}
    {%- set where = config.get('where', '') -%}
    {%- set test_metadata = model.test_metadata if model is defined and model.test_metadata is defined else none -%}
    {%- set test_name = test_metadata.name if test_metadata else '' -%}
    {%- set column = test_metadata.kwargs.get('column_name') if test_metadata else none -%}
    {%- set rule = var('test_new_rows_only', {}).get(relation.identifier) if relation.identifier is not none else none -%}
    {%- if test_name == 'relationships' and rule and column in rule.get('relationships_by_index', []) -%}
        {%- do return('(' ~ distinct_values(relation, column, where) ~ ') dbt_subquery') -%}
    {%- endif -%}
    {%- set scope = new_rows_predicate(relation) -%}
    {%- set predicates = [] -%}
    {%- if where %}{% do predicates.append('(' ~ where ~ ')') %}{% endif -%}
    {%- if scope %}{% do predicates.append(scope) %}{% endif -%}
    {%- if predicates -%}
        {%- do return('(select * from ' ~ relation ~ ' where ' ~ predicates | join(' and ') ~ ') dbt_subquery') -%}
    {%- else -%}
        {%- do return(relation) -%}
    {%- endif -%}
{%- endmacro %}


{#
    SQL: the distinct non-null values of `column` in `relation` (a column of that name), by a loose index scan:
    each step asks the index for the first value above the last one, so the cost follows the number of values,
    not of rows. Needs an index whose first column is `column`.
#}
{% macro distinct_values(relation, column, where='') -%}
    {%- set filter = ('(' ~ where ~ ') and ') if where else '' -%}
    with recursive distinct_values as (
        (select {{ column }} from {{ relation }} where {{ filter }}{{ column }} is not null order by {{ column }} limit 1)
        union all
        select (
            select {{ column }} from {{ relation }}
            where {{ filter }}{{ column }} > distinct_values.{{ column }}
            order by {{ column }} limit 1
        )
        from distinct_values
        where distinct_values.{{ column }} is not null
    )
    select {{ column }} from distinct_values where {{ column }} is not null
{%- endmacro %}


{# A relation for a singular test: the whole relation, or its new rows as above. #}
{% macro test_scope(relation) -%}
    {%- set scope = new_rows_predicate(relation) -%}
    {%- if scope -%}
        (select * from {{ relation }} where {{ scope }})
    {%- else -%}
        {{ relation }}
    {%- endif -%}
{%- endmacro %}


{# The SQL predicate that keeps a relation's new rows, or '' for "every row". #}
{% macro new_rows_predicate(relation) -%}
    {%- set rules = var('test_new_rows_only', {}) -%}
    {%- set rule = rules.get(relation.identifier) if relation.identifier is not none else none -%}
    {%- if not execute or rule is none or flags.FULL_REFRESH or var('test_all_rows', false) -%}
        {%- do return('') -%}
    {%- endif -%}

    {%- if rule.get('latest_batch') -%}
        {#- The batch's start time as a literal: against `= (select max(...))` Postgres plans for an unknown value,
            guesses half the table and scans all of it; a literal it looks up in the column's index. -#}
        {%- if load_relation(relation) is none -%}
            {%- do return('') -%}  {# not built yet (dbt compile, docs generate): every row, as on the first build #}
        {%- endif -%}
        {%- set column = adapter.quote(rule['latest_batch']) -%}
        {%- set latest = run_query('select max(' ~ column ~ ') from ' ~ relation).columns[0].values()[0] -%}
        {%- do return(column ~ " = timestamptz '" ~ latest.isoformat() ~ "'" if latest is not none else 'false') -%}
    {%- endif -%}

    {%- set fact = adapter.get_relation(database=relation.database, schema='core', identifier=rule['until_in']) -%}
    {%- if fact is none -%}
        {%- do return('') -%}  {# the first build: every row is new #}
    {%- endif -%}
    {%- set files_query -%}
        select file_ledger.file_id
        from ops.file_ledger as file_ledger
        where file_ledger.drop_type = '{{ rule["new_files_of"] }}'
            and file_ledger.status = 'loaded'
            and not exists (select from {{ fact }} as fact_rows where fact_rows.file_id = file_ledger.file_id)
        order by 1
    {%- endset -%}
    {%- set file_ids = run_query(files_query).columns[0].values() -%}
    {%- if file_ids | length == 0 -%}
        {%- do return('false') -%}
    {%- endif -%}
    {%- do return('file_id in (' ~ file_ids | join(', ') ~ ')') -%}
{%- endmacro %}
