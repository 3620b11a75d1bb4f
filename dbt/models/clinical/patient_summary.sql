{#
    One row per patient: the 12 months of triage visits and medical records up to the warehouse's latest
    activity date (as_of_date), recent diagnoses and risk flags. Patient-level personal data: served only
    to roles allowed to see it (api_reader, behind the API's clinician check), never to BI tools.
#}
with

patients as (

    select * from {{ ref('dim_patients') }}

),

triage_visits as (

    select * from {{ ref('fct_triage_visits') }}

),

medical_records as (

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

visits_in_window as (

    select triage_visits.*
    from triage_visits
    cross join as_of
    where triage_visits.visit_date > as_of.as_of_date - interval '12 months'
        and triage_visits.visit_date <= as_of.as_of_date

),

records_in_window as (

    select medical_records.*
    from medical_records
    cross join as_of
    where medical_records.record_date > as_of.as_of_date - interval '12 months'
        and medical_records.record_date <= as_of.as_of_date

),

visit_summary as (

    select
        patient_id,
        count(*) as triage_visit_count_12m,
        count(*) filter (where is_urgent) as urgent_visit_count_12m,
        round(avg(triage_level), 2) as avg_triage_level_12m,
        max(visit_date) as last_visit_date,
        bool_or(triage_level = 1 and visit_date > (select as_of_date from as_of) - 30) as has_critical_visit_30d
    from visits_in_window
    group by 1

),

patient_conditions as (

    select
        visits_in_window.patient_id,
        array_agg(distinct lower(visit_condition.condition_name) order by lower(visit_condition.condition_name))
            as conditions_12m
    from visits_in_window
    cross join lateral unnest(visits_in_window.conditions) as visit_condition (condition_name)
    group by 1

),

last_visit as (

    -- The latest visit's reading; ties on one day go to the most urgent.
    select distinct on (patient_id)
        patient_id,
        triage_level as last_triage_level,
        systolic_bp as last_systolic_bp,
        diastolic_bp as last_diastolic_bp
    from visits_in_window
    order by patient_id, visit_date desc, triage_level, triage_visit_id

),

record_summary as (

    select
        patient_id,
        count(*) as medical_record_count_12m,
        max(record_date) as last_record_date
    from records_in_window
    group by 1

),

recent_diagnoses as (

    -- Up to three distinct diagnoses, most recent first.
    select
        patient_id,
        (array_agg(diagnosis order by last_seen desc, diagnosis))[1:3] as recent_diagnoses
    from (
        select
            patient_id,
            diagnosis,
            max(record_date) as last_seen
        from records_in_window
        where diagnosis is not null
        group by 1, 2
    ) as diagnoses
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
        coalesce(recent_diagnoses.recent_diagnoses, array[]::text[]) as recent_diagnoses,
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
    left join recent_diagnoses
        on patients.patient_id = recent_diagnoses.patient_id

)

select * from final
