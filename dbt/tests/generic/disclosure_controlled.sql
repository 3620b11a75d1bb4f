{#
    The column is a count published under disclosure control (macros/disclosure_control.sql): null (withheld, or
    not applicable), 0, or at least the threshold and a multiple of the rounding base. A row with a count from 1
    to the threshold minus one, or one not rounded, fails.
        - name: patient_count
          data_tests: [disclosure_controlled]
#}
{% test disclosure_controlled(model, column_name) %}

select *
from {{ model }}
where {{ column_name }} <> 0
    and ({{ column_name }} < {{ sdc_threshold() }} or {{ column_name }} % {{ sdc_rounding_base() }} <> 0)

{% endtest %}
