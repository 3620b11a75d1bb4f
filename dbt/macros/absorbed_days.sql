{#
    Bookkeeping of the incremental state models that aggregate the facts across days (int_patient_windows,
    int_condition_patients; docs/decisions/0016-incremental-state-of-the-patient-marts.md).

    Such a model keeps, beside its aggregate rows, one row per fact and reporting day it has taken in:
    `row_kind` names the fact, `reporting_day` the day and `file_ids` the ledger ids of the files whose rows the
    fact held for that day when they were taken in. Both kinds of row live in the one table, so they are written
    in the one transaction: the aggregates can never describe other fact rows than the bookkeeping says, whatever
    build fails or runs alone.

    absorbed_day_changes(facts, window_start) compares that bookkeeping with the facts as they are now and returns
    the days to work on, as a list of {kind, day, change}:
    - 'new': the fact has rows for the day and the model has taken in none (a new day, a late file, a day that
      comes back into a moving window);
    - 'changed': the model took in other files for the day than the fact now holds (a re-delivered day, a
      superseded or set-aside file: the fact rebuilt or emptied the day);
    - 'leaving': taken in, unchanged, and now on or before `window_start` (only with a window).
    The fact's files for a day are found through the ledger (one probe of the fact's file_id index per file),
    so nothing reads the facts' rows. A loaded file none of whose rows resolved into the fact does not count.

    facts: a list of {kind: <row_kind>, relation: ref(<fact>), drop_type: <ledger drop type>}.
    window_start: a date; days on or before it are not taken in (none: every day).
#}
{% macro absorbed_day_changes(facts, window_start=none) -%}
    {%- if not execute -%}
        {{ return([]) }}
    {%- endif -%}
    {%- set changes_query -%}
        with

        absorbed as (

            select row_kind, reporting_day, file_ids
            from {{ this }}
            where reporting_day is not null

        ),

        fact_files as (

            {% for fact in facts %}
            select
                '{{ fact.kind }}' as row_kind,
                file_ledger.reported_date as reporting_day,
                file_ledger.file_id
            from {{ ref('stg_ops__file_ledger') }} as file_ledger
            where file_ledger.drop_type = '{{ fact.drop_type }}'
                and file_ledger.reported_date is not null
                {% if window_start is not none %}
                and (
                    file_ledger.reported_date > date '{{ window_start }}'
                    or file_ledger.reported_date in (
                        select absorbed.reporting_day from absorbed where absorbed.row_kind = '{{ fact.kind }}'
                    )
                )
                {% endif %}
                and exists (
                    select from {{ fact.relation }} as fact_rows
                    where fact_rows.file_id = file_ledger.file_id
                )
            {% if not loop.last %}union all{% endif %}
            {% endfor %}

        ),

        fact_days as (

            select
                row_kind,
                reporting_day,
                array_agg(file_id order by file_id) as file_ids
            from fact_files
            group by 1, 2

        )

        select
            coalesce(fact_days.row_kind, absorbed.row_kind) as row_kind,
            coalesce(fact_days.reporting_day, absorbed.reporting_day) as reporting_day,
            case
                when absorbed.file_ids is null then 'new'
                when fact_days.file_ids is distinct from absorbed.file_ids then 'changed'
                else 'leaving'
            end as change
        from fact_days
        full outer join absorbed
            on fact_days.row_kind = absorbed.row_kind
            and fact_days.reporting_day = absorbed.reporting_day
        where fact_days.file_ids is distinct from absorbed.file_ids
            {% if window_start is not none %}
            or absorbed.reporting_day <= date '{{ window_start }}'
            {% endif %}
        order by 1, 2
    {%- endset -%}
    {%- set changes = [] -%}
    {%- for row in run_query(changes_query).rows -%}
        {%- do changes.append({'kind': row[0], 'day': row[1], 'change': row[2]}) -%}
    {%- endfor -%}
    {{ return(changes) }}
{%- endmacro %}


{# The days of `changes` (absorbed_day_changes) of one kind and one of the given changes, as a list of dates. #}
{% macro absorbed_days_of(changes, kind, change_names) -%}
    {%- set days = [] -%}
    {%- for change in changes if change.kind == kind and change.change in change_names -%}
        {%- do days.append(change.day) -%}
    {%- endfor -%}
    {{ return(days) }}
{%- endmacro %}


{# SQL: `<column> in (<dates>)`, or false for no dates. #}
{% macro day_in(column, days) -%}
    {%- if days -%}
        {{ column }} in ({% for day in days %}date '{{ day }}'{% if not loop.last %}, {% endif %}{% endfor %})
    {%- else -%}
        false
    {%- endif -%}
{%- endmacro %}


{#
    SQL: bookkeeping rows (row_key, row_kind, reporting_day, file_ids) for one fact (as in absorbed_day_changes):
    - with `days` (an incremental build), one row per listed day with the files the fact now holds for it; a
      day whose rows are gone gets an empty file_ids, which delete_absorbed_leftovers removes after the write;
    - without (a full build), one row per day the fact has rows for, after the SQL date `after` if given.
    The files are found as absorbed_day_changes finds them, so what is written is what the next build compares.
#}
{% macro absorbed_day_rows(fact, days=none, after=none) -%}
    {%- set files_of_day -%}
        select file_ledger.file_id
        from {{ ref('stg_ops__file_ledger') }} as file_ledger
        where file_ledger.drop_type = '{{ fact.drop_type }}'
            and file_ledger.reported_date = listed_days.reporting_day
            and exists (
                select from {{ fact.relation }} as fact_rows
                where fact_rows.file_id = file_ledger.file_id
            )
        order by 1
    {%- endset -%}
    select
        '{{ fact.kind }} ' || to_char(listed_days.reporting_day, 'YYYY-MM-DD') as row_key,
        '{{ fact.kind }}' as row_kind,
        listed_days.reporting_day,
        array({{ files_of_day }}) as file_ids
    from (
        {%- if days is none %}
        select distinct file_ledger.reported_date
        from {{ ref('stg_ops__file_ledger') }} as file_ledger
        where file_ledger.drop_type = '{{ fact.drop_type }}'
            and file_ledger.reported_date is not null
            {% if after is not none %}and file_ledger.reported_date > {{ after }}{% endif %}
        {%- elif days %}
        values {% for day in days %}(date '{{ day }}'){% if not loop.last %}, {% endif %}{% endfor %}
        {%- else %}
        select cast(null as date) where false
        {%- endif %}
    ) as listed_days (reporting_day)
    {%- if days is none %}
    where exists ({{ files_of_day }})
    {%- endif %}
{%- endmacro %}


{#
    Post-hook of the state models: after an incremental write, remove the rows that stand for nothing: bookkeeping
    rows with no files (the day's rows are gone), bookkeeping rows on or before the window's start (days that
    left a moving window; `window_months`: its length, the window ending on the latest day taken in), and the
    aggregate rows the model marked empty (`empty_rows`: a SQL condition). Never matches after a full build.
#}
{% macro delete_absorbed_leftovers(empty_rows, window_months=none) -%}
    delete from {{ this }} as state_rows
    where (state_rows.reporting_day is not null and cardinality(state_rows.file_ids) = 0)
        {%- if window_months is not none %}
        or state_rows.reporting_day <= (
            select max(latest.reporting_day) - interval '{{ window_months }} months'
            from {{ this }} as latest
            where latest.reporting_day is not null and cardinality(latest.file_ids) > 0
        )
        {%- endif %}
        or (state_rows.reporting_day is null and ({{ empty_rows }}))
{%- endmacro %}


{#
    Days of a moving window as bits (int_patient_windows.active_day_bits: the days a patient was active): day d
    is bit (d - 2000-01-01) mod 400. A window of 12 months spans at most 366 days, so no two of its days share
    a bit; bits of days that leave the window are cleared as they leave.
#}
{% macro window_day_bit_index(day) -%}
    mod(mod(cast({{ day }} as date) - date '2000-01-01', 400) + 400, 400)
{%- endmacro %}


{% macro window_day_bit(day) -%}
    set_bit({{ no_window_days() }}, {{ window_day_bit_index(day) }}, 1)
{%- endmacro %}


{% macro no_window_days() -%}
    cast(repeat('0', 400) as bit(400))
{%- endmacro %}
