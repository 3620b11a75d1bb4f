{#
    One row per patient: the 12 months of triage visits and medical records up to the warehouse's latest
    activity date (as_of_date), recent diagnoses and risk flags. Patient-level personal data: served only
    to roles allowed to see it (api_reader, behind the API's clinician check), never to BI tools.

    Rebuilt whole every night (the window and the flags move with as_of_date), so each fact is read once,
    narrow, and aggregated by hashing: a CTE read twice would be copied whole, and sorting the window's
    rows per patient spills to disk.
#}
with

patients as (

    select * from {{ ref('dim_patients') }}

),

triage_visits as not materialized (

    select * from {{ ref('fct_triage_visits') }}

),

medical_records as not materialized (

    select * from {{ ref('fct_medical_records') }}

),

as_of as (

    -- The latest day with any activity, so a rebuild of the same data gives the same summary.
    select
        greatest(
            (select max(visit_date) from triage_visits),
            (select max(record_date) from medical_records)
        ) as as_of_date

),

visits_in_window as not materialized (

    select
        triage_visits.patient_id,
        triage_visits.triage_visit_id,
        triage_visits.visit_date,
        triage_visits.triage_level,
        triage_visits.is_urgent,
        triage_visits.systolic_bp,
        triage_visits.diastolic_bp,
        triage_visits.conditions,
        as_of.as_of_date
    from triage_visits
    cross join as_of
    where triage_visits.visit_date > as_of.as_of_date - interval '12 months'
        and triage_visits.visit_date <= as_of.as_of_date

),

visit_summary as (

    select
        patient_id,
        count(*) as triage_visit_count_12m,
        count(*) filter (where is_urgent) as urgent_visit_count_12m,
        round(avg(triage_level), 2) as avg_triage_level_12m,
        max(visit_date) as last_visit_date,
        bool_or(triage_level = 1 and visit_date > as_of_date - 30) as has_critical_visit_30d
    from visits_in_window
    group by 1

),

patient_conditions as (

    select
        patient_id,
        array_agg(condition_name order by condition_name) as conditions_12m
    from (
        select distinct
            visits_in_window.patient_id,
            lower(visit_condition.condition_name) as condition_name
        from visits_in_window
        cross join lateral unnest(visits_in_window.conditions) as visit_condition (condition_name)
    ) as distinct_conditions
    group by 1

),

last_visit as (

    -- The latest visit's reading; ties on one day go to the most urgent. Only the visits on each
    -- patient's last day are sorted.
    select distinct on (visits_in_window.patient_id)
        visits_in_window.patient_id,
        visits_in_window.triage_level as last_triage_level,
        visits_in_window.systolic_bp as last_systolic_bp,
        visits_in_window.diastolic_bp as last_diastolic_bp
    from visits_in_window
    inner join visit_summary
        on visits_in_window.patient_id = visit_summary.patient_id
        and visits_in_window.visit_date = visit_summary.last_visit_date
    order by visits_in_window.patient_id, visits_in_window.triage_level, visits_in_window.triage_visit_id

),

patient_diagnoses as (

    -- Records per patient and diagnosis (null included): the counts and dates below add these up.
    select
        medical_records.patient_id,
        medical_records.diagnosis,
        count(*) as record_count,
        max(medical_records.record_date) as last_seen
    from medical_records
    cross join as_of
    where medical_records.record_date > as_of.as_of_date - interval '12 months'
        and medical_records.record_date <= as_of.as_of_date
    group by 1, 2

),

record_summary as (

    select
        patient_id,
        cast(sum(record_count) as bigint) as medical_record_count_12m,
        max(last_seen) as last_record_date,
        -- Up to three distinct diagnoses, most recent first.
        (array_agg(diagnosis order by last_seen desc, diagnosis) filter (where diagnosis is not null))[1:3]
            as recent_diagnoses
    from patient_diagnoses
    group by 1

),

final as (

    select
        patients.patient_id,
        patients.facility_id,
        patients.first_name,
        patients.last_name,
        patients.sex,
        patients.birth_date,
        {{ age_in_years('patients.birth_date', 'as_of.as_of_date') }} as age_years,
        {{ age_band(age_in_years('patients.birth_date', 'as_of.as_of_date')) }} as age_band,
        as_of.as_of_date,
        coalesce(visit_summary.triage_visit_count_12m, 0) as triage_visit_count_12m,
        coalesce(visit_summary.urgent_visit_count_12m, 0) as urgent_visit_count_12m,
        visit_summary.avg_triage_level_12m,
        visit_summary.last_visit_date,
        last_visit.last_triage_level,
        last_visit.last_systolic_bp,
        last_visit.last_diastolic_bp,
        coalesce(patient_conditions.conditions_12m, array[]::text[]) as conditions_12m,
        coalesce(record_summary.medical_record_count_12m, 0) as medical_record_count_12m,
        record_summary.last_record_date,
        coalesce(record_summary.recent_diagnoses, array[]::text[]) as recent_diagnoses,
        -- Stage 2 hypertension threshold on the latest reading (systolic >= 140 or diastolic >= 90).
        coalesce(last_visit.last_systolic_bp >= 140 or last_visit.last_diastolic_bp >= 90, false)
            as is_hypertensive_last_reading,
        coalesce(visit_summary.triage_visit_count_12m, 0) >= 4 as is_frequent_visitor,
        coalesce(visit_summary.has_critical_visit_30d, false) as has_critical_visit_30d,
        coalesce({{ age_in_years('patients.birth_date', 'as_of.as_of_date') }} >= 65, false) as is_65_or_older,
        cast('{{ run_started_at.isoformat() }}' as timestamptz) as built_at
    from patients
    cross join as_of
    left join visit_summary
        on patients.patient_id = visit_summary.patient_id
    left join last_visit
        on patients.patient_id = last_visit.patient_id
    left join patient_conditions
        on patients.patient_id = patient_conditions.patient_id
    left join record_summary
        on patients.patient_id = record_summary.patient_id

)

select * from final
