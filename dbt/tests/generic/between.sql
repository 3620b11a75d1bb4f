{#
    The column lies within [min, max], both inclusive; either bound may be left out. Nulls pass.
        - between:
            arguments: {min: 1, max: 5}
#}
{% test between(model, column_name, min=none, max=none) %}

{%- if min is none and max is none -%}
    {{ exceptions.raise_compiler_error("between: give min, max or both") }}
{%- endif %}

select *
from {{ model }}
where
    {%- if min is not none %} {{ column_name }} < {{ min }}{% endif %}
    {%- if min is not none and max is not none %} or{% endif %}
    {%- if max is not none %} {{ column_name }} > {{ max }}{% endif %}

{% endtest %}
