{#
    One row per patient, identified by (facility, first name, last name, date of birth). A patients row
    names its facility only: it is attached to the one facility of that name, and left out when no
    facility or several facilities have that name. The latest file wins.
#}
with

patients as (

    select * from {{ ref('stg_medilink__patients') }}

),

facilities as (

    select * from {{ ref('dim_facilities') }}

),

patients_at_facilities as (

    select
        facilities.facility_id,
        patients.*
    from patients
    inner join facilities
        on lower(patients.facility_name) = lower(facilities.facility_name)
    where facilities.is_name_unique

),

keyed_patients as (

    select
        {{ surrogate_key(['facility_id', 'lower(first_name)', 'lower(last_name)', "to_char(birth_date, 'YYYY-MM-DD')"]) }} as patient_id,
        *
    from patients_at_facilities

),

ranked_patients as (

    select
        *,
        row_number() over (
            partition by patient_id
            order by reported_date desc nulls last, file_id desc, source_row_number desc
        ) as recency_rank,
        min(reported_date) over (partition by patient_id) as first_reported_date,
        max(reported_date) over (partition by patient_id) as last_reported_date
    from keyed_patients

),

latest_patients as (

    select * from ranked_patients
    where recency_rank = 1

),

final as (

    select
        patient_id,
        facility_id,
        first_name,
        last_name,
        sex,
        birth_date,
        phone_number,
        -- Visits name their patient by (facility, first, last name) only, without a date of birth.
        count(*) over (partition by facility_id, lower(first_name), lower(last_name)) = 1 as is_name_unique,
        first_reported_date,
        last_reported_date,
        file_id,
        cast('{{ run_started_at.isoformat() }}' as timestamptz) as built_at
    from latest_patients

)

select * from final
