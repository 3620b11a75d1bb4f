{#
    One row per patient: the 12 months of triage visits and medical records up to the warehouse's latest
    activity date (as_of_date), recent diagnoses and risk flags. Patient-level personal data: served only
    to roles allowed to see it (api_reader, behind the API's clinician check), never to BI tools.

    Published from core.int_patient_windows, which keeps each patient's window up to date from the days that
    arrive and the days that leave (docs/decisions/0016-incremental-state-of-the-patient-marts.md): this
    table adds the patients without activity in the window, and what moves with as_of_date every day (age,
    the 30-day flag), reading one row per patient instead of the facts.
#}
with

patients as (

    select * from {{ ref('dim_patients') }}

),

patient_windows as (

    select * from {{ ref('int_patient_windows') }}
    where patient_id is not null

),

as_of as (

    -- The latest day with any activity (the newest day the window took in), so a rebuild of the same data
    -- gives the same summary.
    select max(reporting_day) as as_of_date
    from {{ ref('int_patient_windows') }}
    where reporting_day is not null

),

recent_diagnoses as (

    -- Up to three distinct diagnoses, most recently recorded first.
    select
        patient_windows.patient_id,
        (array_agg(named.diagnosis order by named.last_seen desc, named.diagnosis))[1:3] as recent_diagnoses
    from patient_windows
    cross join lateral unnest(patient_windows.diagnosis_names, patient_windows.diagnosis_last_seen)
        as named (diagnosis, last_seen)
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
        coalesce(patient_windows.triage_visit_count, 0) as triage_visit_count_12m,
        coalesce(patient_windows.urgent_visit_count, 0) as urgent_visit_count_12m,
        round(cast(patient_windows.triage_level_sum as numeric) / nullif(patient_windows.triage_visit_count, 0), 2)
            as avg_triage_level_12m,
        patient_windows.last_visit_date,
        patient_windows.last_triage_level,
        patient_windows.last_systolic_bp,
        patient_windows.last_diastolic_bp,
        coalesce(patient_windows.condition_names, array[]::text[]) as conditions_12m,
        coalesce(patient_windows.medical_record_count, 0) as medical_record_count_12m,
        patient_windows.last_record_date,
        coalesce(recent_diagnoses.recent_diagnoses, array[]::text[]) as recent_diagnoses,
        -- Stage 2 hypertension threshold on the latest reading (systolic >= 140 or diastolic >= 90).
        coalesce(patient_windows.last_systolic_bp >= 140 or patient_windows.last_diastolic_bp >= 90, false)
            as is_hypertensive_last_reading,
        coalesce(patient_windows.triage_visit_count, 0) >= 4 as is_frequent_visitor,
        coalesce(patient_windows.last_critical_visit_date > as_of.as_of_date - 30, false) as has_critical_visit_30d,
        coalesce({{ age_in_years('patients.birth_date', 'as_of.as_of_date') }} >= 65, false) as is_65_or_older,
        cast('{{ run_started_at.isoformat() }}' as timestamptz) as built_at
    from patients
    cross join as_of
    left join patient_windows
        on patients.patient_id = patient_windows.patient_id
    left join recent_diagnoses
        on patients.patient_id = recent_diagnoses.patient_id

)

select * from final
