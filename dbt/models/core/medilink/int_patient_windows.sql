{#
    One row per patient with a triage visit or medical record in the 12 months up to as_of_date (the latest
    day of either fact): the window's counts, latest dates and readings, and the conditions and diagnoses seen
    with the day each was last seen. Plus one bookkeeping row per fact and reporting day in the window (the
    files taken in: macros/absorbed_days.sql). clinical.patient_summary publishes these rows.

    Incremental (docs/decisions/0016-incremental-state-of-the-patient-marts.md): a build reads the facts' rows
    of the days that arrived (new, late) and of the days that leave the window, never the whole window:
    - a patient seen on a new day or on a day leaving the window has its row updated from those rows alone:
      counts plus the new day, minus the leaving day; latest dates and readings from the new day when later;
      conditions and diagnoses merged by their last-seen day, and dropped once that day leaves the window;
    - a day whose files changed (re-delivered, superseded, set aside) has its patients, before and after
      (active_day_bits remembers who was active on each day of the window), recomputed from their own rows in
      the window (the facts' (patient, day) index).
    A full build computes every row from the window's rows; the incremental result is the same
    (tests/dbt/test_incremental.py). Like the facts, a change in the dimensions needs a full refresh.
#}
{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='row_key',
        on_schema_change='append_new_columns',
        indexes=[{'columns': ['row_key'], 'unique': True}],
        post_hook="{{ delete_absorbed_leftovers('state_rows.triage_visit_count = 0 and state_rows.medical_record_count = 0', window_months=12) }}",
    )
}}
{%- set visit_fact = {'kind': 'triage_visits', 'relation': ref('fct_triage_visits'), 'drop_type': 'medilink_triage_visits'} -%}
{%- set record_fact = {'kind': 'medical_records', 'relation': ref('fct_medical_records'), 'drop_type': 'medilink_medical_records'} -%}

{%- if is_incremental() and execute -%}
    {%- set bounds_query -%}
        select
            greatest(
                (select max(visit_date) from {{ ref('fct_triage_visits') }}),
                (select max(record_date) from {{ ref('fct_medical_records') }})
            ) as as_of_date
    {%- endset -%}
    {%- set as_of = run_query(bounds_query).columns[0].values()[0] -%}
    {%- set window_start = run_query("select cast(date '" ~ as_of ~ "' - interval '12 months' as date)").columns[0].values()[0]
                           if as_of is not none else modules.datetime.date(9999, 12, 31) -%}
    {%- set changes = absorbed_day_changes([visit_fact, record_fact], window_start=window_start) -%}
    {%- set new_visit_days = absorbed_days_of(changes, 'triage_visits', ['new']) -%}
    {%- set new_record_days = absorbed_days_of(changes, 'medical_records', ['new']) -%}
    {%- set leaving_visit_days = absorbed_days_of(changes, 'triage_visits', ['leaving']) -%}
    {%- set leaving_record_days = absorbed_days_of(changes, 'medical_records', ['leaving']) -%}
    {%- set changed_visit_days = absorbed_days_of(changes, 'triage_visits', ['changed']) -%}
    {%- set changed_record_days = absorbed_days_of(changes, 'medical_records', ['changed']) -%}
    {%- set changed_days = (changed_visit_days + changed_record_days) | unique | list -%}
{%- endif -%}

-- The ledger is read by the day bookkeeping (macros/absorbed_days.sql): declared for dbt's ordering.
-- depends_on: {{ ref('stg_ops__file_ledger') }}

with

-- Read by several steps below, each through its own index: not materialized (that would copy the fact).
triage_visits as not materialized (

    select
        patient_id,
        triage_visit_id,
        visit_date,
        triage_level,
        is_urgent,
        systolic_bp,
        diastolic_bp,
        conditions
    from {{ ref('fct_triage_visits') }}

),

medical_records as not materialized (

    select
        patient_id,
        record_date,
        diagnosis
    from {{ ref('fct_medical_records') }}

),

{% if is_incremental() %}

previous as not materialized (

    select * from {{ this }}

),

window_bounds as (

    select
        cast({{ "date '" ~ as_of ~ "'" if as_of is not none else 'null' }} as date) as as_of_date,
        cast(date '{{ window_start }}' as date) as window_start

),

-- Patients whose days changed: those active on such a day before (their bit) and those on it now.
recomputed_patients as (

    select previous.patient_id
    from previous
    where previous.patient_id is not null
        and ({% for day in changed_days %}get_bit(previous.active_day_bits, {{ window_day_bit_index("date '" ~ day ~ "'") }}) = 1 or {% endfor %}false)

    union

    select patient_id from triage_visits where {{ day_in('visit_date', changed_visit_days) }}

    union

    select patient_id from medical_records where {{ day_in('record_date', changed_record_days) }}

),

-- Rows that add to a patient's window: every window row of a recomputed patient, the new days' rows of the rest.
visits_in as (

    select triage_visits.*
    from triage_visits
    cross join window_bounds
    where triage_visits.patient_id = any(array(select patient_id from recomputed_patients))
        and triage_visits.visit_date > window_bounds.window_start
        and triage_visits.visit_date <= window_bounds.as_of_date

    union all

    select triage_visits.*
    from triage_visits
    where {{ day_in('triage_visits.visit_date', new_visit_days) }}
        and triage_visits.patient_id <> all(array(select patient_id from recomputed_patients))

),

records_in as (

    select medical_records.*
    from medical_records
    cross join window_bounds
    where medical_records.patient_id = any(array(select patient_id from recomputed_patients))
        and medical_records.record_date > window_bounds.window_start
        and medical_records.record_date <= window_bounds.as_of_date

    union all

    select medical_records.*
    from medical_records
    where {{ day_in('medical_records.record_date', new_record_days) }}
        and medical_records.patient_id <> all(array(select patient_id from recomputed_patients))

),

-- Rows that leave a patient's window (days now on or before its start), of patients not recomputed.
visits_out as (

    select triage_visits.*
    from triage_visits
    where {{ day_in('triage_visits.visit_date', leaving_visit_days) }}
        and triage_visits.patient_id <> all(array(select patient_id from recomputed_patients))

),

records_out as (

    select medical_records.*
    from medical_records
    where {{ day_in('medical_records.record_date', leaving_record_days) }}
        and medical_records.patient_id <> all(array(select patient_id from recomputed_patients))

),

-- The rows before this build of the patients updated in place (not recomputed).
carried as (

    select previous.*
    from previous
    where previous.row_key = any(array(
        select patient_id from visits_in
        union
        select patient_id from records_in
        union
        select patient_id from visits_out
        union
        select patient_id from records_out
    ))
        and previous.patient_id <> all(array(select patient_id from recomputed_patients))

),

{% else %}

window_bounds as (

    -- The latest day with any activity, so a rebuild of the same data gives the same window.
    select
        as_of_date,
        cast(as_of_date - interval '12 months' as date) as window_start
    from (
        select greatest(
            (select max(visit_date) from triage_visits),
            (select max(record_date) from medical_records)
        ) as as_of_date
    ) as latest

),

visits_in as (

    select triage_visits.*
    from triage_visits
    cross join window_bounds
    where triage_visits.visit_date > window_bounds.window_start
        and triage_visits.visit_date <= window_bounds.as_of_date

),

records_in as (

    select medical_records.*
    from medical_records
    cross join window_bounds
    where medical_records.record_date > window_bounds.window_start
        and medical_records.record_date <= window_bounds.as_of_date

),

visits_out as (select * from triage_visits where false),

records_out as (select * from medical_records where false),

carried as (

    select
        cast(null as text) as patient_id,
        cast(null as bigint) as triage_visit_count,
        cast(null as bigint) as urgent_visit_count,
        cast(null as bigint) as triage_level_sum,
        cast(null as date) as last_visit_date,
        cast(null as integer) as last_triage_level,
        cast(null as integer) as last_systolic_bp,
        cast(null as integer) as last_diastolic_bp,
        cast(null as date) as last_critical_visit_date,
        cast(null as text[]) as condition_names,
        cast(null as date[]) as condition_last_seen,
        cast(null as bigint) as medical_record_count,
        cast(null as date) as last_record_date,
        cast(null as text[]) as diagnosis_names,
        cast(null as date[]) as diagnosis_last_seen,
        cast(null as bit(400)) as active_day_bits
    where false

),

recomputed_patients as (select cast(null as text) as patient_id where false),

{% endif %}

window_mask as (

    -- A bit for each day of the window: what stays of a carried row's active_day_bits.
    select coalesce(bit_or({{ window_day_bit('window_day') }}), {{ no_window_days() }}) as day_bits
    from window_bounds
    cross join lateral generate_series(window_bounds.window_start + 1, window_bounds.as_of_date, interval '1 day')
        as window_days (window_day)

),

visits_added as (

    select
        patient_id,
        count(*) as visit_count,
        count(*) filter (where is_urgent) as urgent_count,
        sum(triage_level) as triage_level_sum,
        max(visit_date) as last_visit_date,
        max(visit_date) filter (where triage_level = 1) as last_critical_visit_date,
        bit_or({{ window_day_bit('visit_date') }}) as day_bits
    from visits_in
    group by 1

),

last_readings as (

    -- The latest visit's reading; ties on one day go to the most urgent. Only each patient's last day is sorted.
    select distinct on (visits_in.patient_id)
        visits_in.patient_id,
        visits_in.triage_level,
        visits_in.systolic_bp,
        visits_in.diastolic_bp
    from visits_in
    inner join visits_added
        on visits_in.patient_id = visits_added.patient_id
        and visits_in.visit_date = visits_added.last_visit_date
    order by visits_in.patient_id, visits_in.triage_level, visits_in.triage_visit_id

),

visits_removed as (

    select
        patient_id,
        count(*) as visit_count,
        count(*) filter (where is_urgent) as urgent_count,
        sum(triage_level) as triage_level_sum
    from visits_out
    group by 1

),

records_added as (

    select
        patient_id,
        count(*) as record_count,
        max(record_date) as last_record_date,
        bit_or({{ window_day_bit('record_date') }}) as day_bits
    from records_in
    group by 1

),

records_removed as (

    select
        patient_id,
        count(*) as record_count
    from records_out
    group by 1

),

condition_sightings as (

    -- Each condition (lower-cased) with the last day it was named, from the carried row and the rows added;
    -- a condition last named on or before the window's start has left it.
    select
        sightings.patient_id,
        sightings.condition_name,
        max(sightings.seen_on) as last_seen
    from (
        select carried.patient_id, named.condition_name, named.seen_on
        from carried
        cross join lateral unnest(carried.condition_names, carried.condition_last_seen) as named (condition_name, seen_on)
        union all
        select visits_in.patient_id, lower(named.condition_name), visits_in.visit_date
        from visits_in
        cross join lateral unnest(visits_in.conditions) as named (condition_name)
    ) as sightings
    cross join window_bounds
    group by 1, 2, window_bounds.window_start
    having max(sightings.seen_on) > window_bounds.window_start

),

conditions as (

    select
        patient_id,
        array_agg(condition_name order by condition_name) as condition_names,
        array_agg(last_seen order by condition_name) as condition_last_seen
    from condition_sightings
    group by 1

),

diagnosis_sightings as (

    select
        sightings.patient_id,
        sightings.diagnosis,
        max(sightings.seen_on) as last_seen
    from (
        select carried.patient_id, named.diagnosis, named.seen_on
        from carried
        cross join lateral unnest(carried.diagnosis_names, carried.diagnosis_last_seen) as named (diagnosis, seen_on)
        union all
        select records_in.patient_id, records_in.diagnosis, records_in.record_date
        from records_in
        where records_in.diagnosis is not null
    ) as sightings
    cross join window_bounds
    group by 1, 2, window_bounds.window_start
    having max(sightings.seen_on) > window_bounds.window_start

),

diagnoses as (

    select
        patient_id,
        array_agg(diagnosis order by diagnosis) as diagnosis_names,
        array_agg(last_seen order by diagnosis) as diagnosis_last_seen
    from diagnosis_sightings
    group by 1

),

touched_patients as (

    select patient_id from recomputed_patients
    union
    select patient_id from carried
    union
    select patient_id from visits_added
    union
    select patient_id from records_added

),

combined as (

    select
        touched_patients.patient_id,
        coalesce(carried.triage_visit_count, 0) + coalesce(visits_added.visit_count, 0)
            - coalesce(visits_removed.visit_count, 0) as triage_visit_count,
        coalesce(carried.urgent_visit_count, 0) + coalesce(visits_added.urgent_count, 0)
            - coalesce(visits_removed.urgent_count, 0) as urgent_visit_count,
        coalesce(carried.triage_level_sum, 0) + coalesce(visits_added.triage_level_sum, 0)
            - coalesce(visits_removed.triage_level_sum, 0) as triage_level_sum,
        greatest(carried.last_visit_date, visits_added.last_visit_date) as last_visit_date,
        -- The added rows hold the latest visit when they reach past the carried one (a new day, or all of a
        -- recomputed patient's window); a late day before it leaves the carried reading.
        coalesce(visits_added.last_visit_date > carried.last_visit_date, visits_added.last_visit_date is not null)
            as is_reading_added,
        carried.last_triage_level,
        carried.last_systolic_bp,
        carried.last_diastolic_bp,
        greatest(carried.last_critical_visit_date, visits_added.last_critical_visit_date) as last_critical_visit_date,
        coalesce(carried.medical_record_count, 0) + coalesce(records_added.record_count, 0)
            - coalesce(records_removed.record_count, 0) as medical_record_count,
        greatest(carried.last_record_date, records_added.last_record_date) as last_record_date,
        (coalesce(carried.active_day_bits, {{ no_window_days() }}) & window_mask.day_bits)
            | coalesce(visits_added.day_bits, {{ no_window_days() }})
            | coalesce(records_added.day_bits, {{ no_window_days() }}) as active_day_bits
    from touched_patients
    cross join window_mask
    left join carried
        on touched_patients.patient_id = carried.patient_id
    left join visits_added
        on touched_patients.patient_id = visits_added.patient_id
    left join visits_removed
        on touched_patients.patient_id = visits_removed.patient_id
    left join records_added
        on touched_patients.patient_id = records_added.patient_id
    left join records_removed
        on touched_patients.patient_id = records_removed.patient_id

),

patient_rows as (

    select
        combined.patient_id as row_key,
        combined.patient_id,
        cast(null as text) as row_kind,
        cast(null as date) as reporting_day,
        cast(null as bigint[]) as file_ids,
        combined.triage_visit_count,
        combined.urgent_visit_count,
        combined.triage_level_sum,
        case when combined.last_visit_date > window_bounds.window_start then combined.last_visit_date end
            as last_visit_date,
        case
            when not combined.last_visit_date > window_bounds.window_start then null
            when combined.is_reading_added then last_readings.triage_level
            else combined.last_triage_level
        end as last_triage_level,
        case
            when not combined.last_visit_date > window_bounds.window_start then null
            when combined.is_reading_added then last_readings.systolic_bp
            else combined.last_systolic_bp
        end as last_systolic_bp,
        case
            when not combined.last_visit_date > window_bounds.window_start then null
            when combined.is_reading_added then last_readings.diastolic_bp
            else combined.last_diastolic_bp
        end as last_diastolic_bp,
        case when combined.last_critical_visit_date > window_bounds.window_start
            then combined.last_critical_visit_date end as last_critical_visit_date,
        conditions.condition_names,
        conditions.condition_last_seen,
        combined.medical_record_count,
        case when combined.last_record_date > window_bounds.window_start then combined.last_record_date end
            as last_record_date,
        diagnoses.diagnosis_names,
        diagnoses.diagnosis_last_seen,
        combined.active_day_bits
    from combined
    cross join window_bounds
    left join last_readings
        on combined.patient_id = last_readings.patient_id
    left join conditions
        on combined.patient_id = conditions.patient_id
    left join diagnoses
        on combined.patient_id = diagnoses.patient_id

),

day_rows as (

    {% if is_incremental() %}
    {{ absorbed_day_rows(visit_fact, days=absorbed_days_of(changes, 'triage_visits', ['new', 'changed'])) }}
    union all
    {{ absorbed_day_rows(record_fact, days=absorbed_days_of(changes, 'medical_records', ['new', 'changed'])) }}
    {% else %}
    {{ absorbed_day_rows(visit_fact, after='(select window_start from window_bounds)') }}
    union all
    {{ absorbed_day_rows(record_fact, after='(select window_start from window_bounds)') }}
    {% endif %}

),

final as (

    select
        patient_rows.*,
        cast('{{ run_started_at.isoformat() }}' as timestamptz) as built_at
    from patient_rows

    union all

    select
        day_rows.row_key,
        cast(null as text) as patient_id,
        day_rows.row_kind,
        day_rows.reporting_day,
        day_rows.file_ids,
        cast(null as bigint) as triage_visit_count,
        cast(null as bigint) as urgent_visit_count,
        cast(null as bigint) as triage_level_sum,
        cast(null as date) as last_visit_date,
        cast(null as integer) as last_triage_level,
        cast(null as integer) as last_systolic_bp,
        cast(null as integer) as last_diastolic_bp,
        cast(null as date) as last_critical_visit_date,
        cast(null as text[]) as condition_names,
        cast(null as date[]) as condition_last_seen,
        cast(null as bigint) as medical_record_count,
        cast(null as date) as last_record_date,
        cast(null as text[]) as diagnosis_names,
        cast(null as date[]) as diagnosis_last_seen,
        cast(null as bit(400)) as active_day_bits,
        cast('{{ run_started_at.isoformat() }}' as timestamptz) as built_at
    from day_rows

)

select * from final
