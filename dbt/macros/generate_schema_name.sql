{#
    Custom schemas are used verbatim (staging, core, analytics), not dbt's default <target_schema>_<custom>,
    so BI tools and the API see the same schema names in every environment. Models without a custom
    schema go to the target's schema.
#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}
        {{ target.schema }}
    {%- else -%}
        {{ custom_schema_name | trim }}
    {%- endif -%}
{%- endmacro %}
