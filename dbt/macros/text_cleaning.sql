{# Trim and collapse runs of whitespace to one space ('Abuja  Municipal ' -> 'Abuja Municipal'). #}
{% macro squish(expression) -%}
    nullif(regexp_replace(trim({{ expression }}), '\s+', ' ', 'g'), '')
{%- endmacro %}


{#
    Nigerian state name in one spelling: title case ('LAGOS', 'lagos' -> 'Lagos'; 'cross river' ->
    'Cross River'). The Federal Capital Territory arrives as 'Fct', 'FCT', 'Abuja', 'Abuja FCT',
    'FCT - Abuja' or 'Federal Capital Territory' and is always 'FCT'.
#}
{% macro normalize_state(expression) -%}
    case
        when {{ expression }} is null then null
        when trim(regexp_replace(lower({{ expression }}), '[^a-z]+', ' ', 'g')) ~ '\mfct\M'
            or trim(regexp_replace(lower({{ expression }}), '[^a-z]+', ' ', 'g')) like '%federal capital territory%'
            or trim(regexp_replace(lower({{ expression }}), '[^a-z]+', ' ', 'g')) = 'abuja'
            then 'FCT'
        else initcap({{ squish(expression) }})
    end
{%- endmacro %}


{#
    A ';'-separated cell as text[]: items trimmed, empty items dropped, order kept.
    null or an empty cell gives an empty array, so unnest() needs no null check downstream.
#}
{% macro split_list(expression, delimiter=';') -%}
    array(
        select trim(list_items.item)
        from unnest(string_to_array({{ expression }}, '{{ delimiter }}')) with ordinality as list_items (item, position)
        where trim(list_items.item) <> ''
        order by list_items.position
    )
{%- endmacro %}


{#
    A Nigerian phone number in E.164 form ('+2348012345678'), or null when the text is not one. Accepts
    '+234 801 234 5678', '2348012345678', '08012345678' and '8012345678' (spaces, dashes, dots and
    brackets ignored): ten national digits after the country code or the trunk 0, the first of them 7, 8 or 9.
#}
{% macro nigerian_phone(expression) -%}
    case
        when regexp_replace({{ expression }}, '[\s().-]', '', 'g') ~ '^(\+?234|0)?[789][01]\d{8}$'
            then '+234' || right(regexp_replace({{ expression }}, '[\s().-]', '', 'g'), 10)
    end
{%- endmacro %}
