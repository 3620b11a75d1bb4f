{#
    Statistical disclosure control of the de-identified marts (docs/decisions/0011-disclosure-control.md): what
    BI tools and the analyst role see of a count of people, or of events about people (visits, records).

    * 0 is published as 0: a true zero, nobody.
    * 1 .. threshold-1 is withheld: null in the mart, and the row's `is_..._suppressed` marker is true.
    * threshold and above is rounded to the nearest multiple of the rounding base, halves up (NHS England's
      practice for small-number publications: suppress, then round to the nearest 5).

    The threshold and the base come from the environment (DBT_SDC_THRESHOLD, DBT_SDC_ROUNDING_BASE, which `elt`
    and the Airflow tasks set from Settings' SDC_THRESHOLD and SDC_ROUNDING_BASE), else from the project vars
    `sdc_threshold` and `sdc_rounding_base` in dbt_project.yml. A pair under which a published figure could stand
    for exactly one count, or fall below the threshold, is refused when the project is parsed.
#}
{% macro sdc_threshold() -%}
    {{- return(_sdc_settings()['threshold']) -}}
{%- endmacro %}


{% macro sdc_rounding_base() -%}
    {{- return(_sdc_settings()['rounding_base']) -}}
{%- endmacro %}


{# The count rounded to the nearest multiple of `base`, halves up, in integers: floor((2c + b) / 2b) * b. #}
{% macro _sdc_round_number(count, base) -%}
    {{- return(((2 * count + base) // (2 * base)) * base) -}}
{%- endmacro %}


{% macro _sdc_settings() -%}
    {%- set values = {} -%}
    {%- for name, variable in [('threshold', 'DBT_SDC_THRESHOLD'), ('rounding_base', 'DBT_SDC_ROUNDING_BASE')] -%}
        {%- set text = env_var(variable, var('sdc_' ~ name)) | string | trim -%}
        {%- if not modules.re.fullmatch('[0-9]{1,6}', text) or text | int < 1 -%}
            {{- exceptions.raise_compiler_error(
                variable ~ ' (sdc_' ~ name ~ ') must be a whole number from 1 to 999999, not "' ~ text ~ '"') -}}
        {%- endif -%}
        {%- do values.update({name: text | int}) -%}
    {%- endfor -%}
    {%- set threshold, base = values['threshold'], values['rounding_base'] -%}
    {%- if base > 1 -%}
        {%- set lowest = _sdc_round_number(threshold, base) -%}
        {%- if lowest < threshold or _sdc_round_number(threshold + 1, base) != lowest -%}
            {{- exceptions.raise_compiler_error(
                'disclosure control: with threshold ' ~ threshold ~ ' and rounding base ' ~ base ~ ' a count of '
                ~ threshold ~ ' is published as ' ~ lowest ~ (', below the threshold' if lowest < threshold
                else ', which then stands for that count alone') ~ '. Choose a threshold that rounds up to a '
                'multiple of the base shared with the count above it (with base 5: 3, 4, 5, 8, 9, 10, 13, ...)') -}}
        {%- endif -%}
    {%- endif -%}
    {{- return(values) -}}
{%- endmacro %}


{# SQL: true when a count is withheld on its own account (1 .. threshold-1); false for 0, null and the rest. #}
{% macro sdc_is_small(count) -%}
    coalesce(({{ count }}) between 1 and {{ sdc_threshold() - 1 }}, false)
{%- endmacro %}


{#
    SQL: the count as published, a bigint: null when `withheld` (a SQL boolean; by default sdc_is_small(count)),
    else rounded to the nearest multiple of the rounding base, halves up. 0 stays 0; null stays null.
#}
{% macro sdc_publish(count, withheld=none) -%}
    {%- set base = sdc_rounding_base() -%}
    case
        when {{ withheld if withheld is not none else sdc_is_small(count) }} then cast(null as bigint)
        else (2 * cast(({{ count }}) as bigint) + {{ base }}) / {{ 2 * base }} * {{ base }}
    end
{%- endmacro %}
