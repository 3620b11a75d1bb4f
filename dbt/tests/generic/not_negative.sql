{# The column is never below zero (counts, amounts). Nulls pass; pair with not_null where needed. #}
{% test not_negative(model, column_name) %}

select *
from {{ model }}
where {{ column_name }} < 0

{% endtest %}
