{#
    Model-level: no two rows share the values of the given columns (a key of several columns). Nulls compare
    equal here, as in group by, so two rows with a null in the same key column and the rest equal fail.
        data_tests:
          - unique_combination_of_columns:
              arguments:
                columns: [org_code, financial_year, quarter, sector]
#}
{% test unique_combination_of_columns(model, columns) %}

select
    {{ columns | join(', ') }},
    count(*) as row_count
from {{ model }}
group by {{ columns | join(', ') }}
having count(*) > 1

{% endtest %}
