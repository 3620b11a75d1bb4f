{# Whole years between a birth date and a later date (age on that day); null when either is null. #}
{% macro age_in_years(birth_date, on_date) -%}
    cast(date_part('year', age({{ on_date }}, {{ birth_date }})) as integer)
{%- endmacro %}


{#
    Age band used by every de-identified mart: '0-4', '5-14', '15-24', '25-44', '45-64', '65+'
    (the bands of Nigeria's health statistics); 'Unknown' when the age is null or negative.
#}
{% macro age_band(age_in_years) -%}
    case
        when {{ age_in_years }} is null or {{ age_in_years }} < 0 then 'Unknown'
        when {{ age_in_years }} < 5 then '0-4'
        when {{ age_in_years }} < 15 then '5-14'
        when {{ age_in_years }} < 25 then '15-24'
        when {{ age_in_years }} < 45 then '25-44'
        when {{ age_in_years }} < 65 then '45-64'
        else '65+'
    end
{%- endmacro %}
