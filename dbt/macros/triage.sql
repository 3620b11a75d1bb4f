{# Triage level (1 most urgent .. 5 least) to its priority label; 4 and 5 are both 'Low'. #}
{% macro triage_priority(triage_level) -%}
    case {{ triage_level }}
        when 1 then 'Critical'
        when 2 then 'High'
        when 3 then 'Medium'
        when 4 then 'Low'
        when 5 then 'Low'
    end
{%- endmacro %}


{#
    Systolic or diastolic pressure (mmHg) from free-text vital signs such as 'BP: 140/90, HR: 88',
    'bp 140 / 90' or 'Blood pressure: 140/90'; null when the text has no reading of that shape.
    part: 'systolic' or 'diastolic'.
#}
{% macro blood_pressure(vital_signs, part) -%}
    {%- set index = {'systolic': 1, 'diastolic': 2}[part] -%}
    cast(
        (regexp_match({{ vital_signs }}, '(?:\mbp|blood pressure)\s*:?\s*(\d{2,3})\s*/\s*(\d{2,3})', 'i'))[{{ index }}]
        as integer
    )
{%- endmacro %}
