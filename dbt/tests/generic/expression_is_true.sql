{#
    Model-level: every row satisfies a SQL boolean expression; rows where it is false fail.
    A null result passes (say `x is not null and ...` when null must fail).
        data_tests:
          - expression_is_true:
              arguments:
                expression: "urgent_visit_count <= triage_visit_count"
#}
{% test expression_is_true(model, expression) %}

select *
from {{ model }}
where not ({{ expression }})

{% endtest %}
