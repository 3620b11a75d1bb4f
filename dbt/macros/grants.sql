{#
    Usage on the published schemas for the roles that read them (roles: elt/warehouse/roles.py).
    Table-level select comes from each folder's +grants in dbt_project.yml; schemas need usage as well,
    re-applied at the end of every run so a schema dbt just created is readable at once.
#}
{% macro grant_schema_usage() %}
    {%- set readers = {'core': 'api_reader', 'clinical': 'api_reader', 'analytics': 'api_reader, bi_reader'} -%}
    do $$
    begin
    {%- for schema_name, roles in readers.items() %}
        if exists (select from pg_namespace where nspname = '{{ schema_name }}') then
            grant usage on schema {{ schema_name }} to {{ roles }};
        end if;
    {%- endfor %}
    end $$
{% endmacro %}
