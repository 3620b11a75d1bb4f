{#
    The per-facility counts of int_facility_activity (the true counts that facility_performance and
    facility_stats publish after disclosure control) add up to the core tables they summarise: every patient,
    medical record and triage visit is counted at exactly one facility. Returns a row on mismatch.

    In two steps, so that the nightly build does not count every fact row again: int_facility_activity against
    dim_patients and the daily rollups it adds up (small tables, whole), and the daily rollups against the
    facts for the days of the facts' latest batch (test_scope: the days a nightly build rewrote; every day on
    a full refresh or with `test_all_rows`). Days are rewritten whole, so a day either matches or not.
#}
{%- set records_scoped = new_rows_predicate(ref('fct_medical_records')) != '' -%}
{%- set visits_scoped = new_rows_predicate(ref('fct_triage_visits')) != '' -%}
with

facility_activity as (

    select * from {{ ref('int_facility_activity') }}

),

patients as (

    select * from {{ ref('dim_patients') }}

),

daily_records as (

    select * from {{ ref('int_medical_records_daily') }}

),

daily_visits as (

    select * from {{ ref('int_triage_visits_daily') }}

),

medical_records as (

    select * from {{ test_scope(ref('fct_medical_records')) }} as scoped_rows

),

triage_visits as (

    select * from {{ test_scope(ref('fct_triage_visits')) }} as scoped_rows

),

activity_totals as (

    select
        coalesce(sum(patient_count), 0) as patient_count,
        coalesce(sum(medical_record_count), 0) as medical_record_count,
        coalesce(sum(triage_visit_count), 0) as triage_visit_count,
        coalesce(sum(urgent_visit_count), 0) as urgent_visit_count
    from facility_activity

),

rollup_totals as (

    select
        (select count(*) from patients) as patient_count,
        (select coalesce(sum(record_count), 0) from daily_records) as medical_record_count,
        (select coalesce(sum(visit_count), 0) from daily_visits) as triage_visit_count,
        (select coalesce(sum(urgent_count), 0) from daily_visits) as urgent_visit_count

),

totals_mismatch as (

    select
        'int_facility_activity' as compared,
        cast(null as date) as activity_date,
        activity_totals.medical_record_count + activity_totals.triage_visit_count as mart_count,
        rollup_totals.medical_record_count + rollup_totals.triage_visit_count as core_count
    from activity_totals
    cross join rollup_totals
    where activity_totals.patient_count <> rollup_totals.patient_count
        or activity_totals.medical_record_count <> rollup_totals.medical_record_count
        or activity_totals.triage_visit_count <> rollup_totals.triage_visit_count
        or activity_totals.urgent_visit_count <> rollup_totals.urgent_visit_count

),

fact_record_days as (

    select
        record_date as activity_date,
        count(*) as record_count
    from medical_records
    group by 1

),

rollup_record_days as (

    select
        record_date as activity_date,
        sum(record_count) as record_count
    from daily_records
    {% if records_scoped %}
    where record_date in (select activity_date from fact_record_days)
    {% endif %}
    group by 1

),

fact_visit_days as (

    select
        visit_date as activity_date,
        count(*) as visit_count,
        count(*) filter (where is_urgent) as urgent_count
    from triage_visits
    group by 1

),

rollup_visit_days as (

    select
        visit_date as activity_date,
        sum(visit_count) as visit_count,
        sum(urgent_count) as urgent_count
    from daily_visits
    {% if visits_scoped %}
    where visit_date in (select activity_date from fact_visit_days)
    {% endif %}
    group by 1

),

record_days_mismatch as (

    select
        'int_medical_records_daily' as compared,
        coalesce(fact_record_days.activity_date, rollup_record_days.activity_date) as activity_date,
        rollup_record_days.record_count as mart_count,
        fact_record_days.record_count as core_count
    from fact_record_days
    full outer join rollup_record_days
        on fact_record_days.activity_date = rollup_record_days.activity_date
    where fact_record_days.record_count is distinct from rollup_record_days.record_count

),

visit_days_mismatch as (

    select
        'int_triage_visits_daily' as compared,
        coalesce(fact_visit_days.activity_date, rollup_visit_days.activity_date) as activity_date,
        rollup_visit_days.visit_count as mart_count,
        fact_visit_days.visit_count as core_count
    from fact_visit_days
    full outer join rollup_visit_days
        on fact_visit_days.activity_date = rollup_visit_days.activity_date
    where fact_visit_days.visit_count is distinct from rollup_visit_days.visit_count
        or fact_visit_days.urgent_count is distinct from rollup_visit_days.urgent_count

),

final as (

    select * from totals_mismatch
    union all
    select * from record_days_mismatch
    union all
    select * from visit_days_mismatch

)

select * from final
