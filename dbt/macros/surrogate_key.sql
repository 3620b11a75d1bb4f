{#
    md5 of the given expressions, each cast to text, nulls replaced by a marker and joined with '|', so
    (null, 'a') and ('', 'a') and ('a|', '') give different keys. Same inputs, same key: ids stay stable
    across reloads of the same data.
#}
{% macro surrogate_key(expressions) -%}
    md5(
        {%- for expression in expressions %}
        coalesce(cast({{ expression }} as text), '<null>')
        {%- if not loop.last %} || '|' ||{% endif -%}
        {% endfor %}
    )
{%- endmacro %}
