{# A visit or record is at its patient's own facility. Returns the offending fact rows (of the latest batch:
   macros/test_scope.sql). #}
with

patients as (

    select * from {{ ref('dim_patients') }}

),

medical_records as (

    select * from {{ test_scope(ref('fct_medical_records')) }} as scoped_rows

),

triage_visits as (

    select * from {{ test_scope(ref('fct_triage_visits')) }} as scoped_rows

),

fact_rows as (

    select 'fct_medical_records' as model_name, medical_record_id as fact_id, facility_id, patient_id
    from medical_records
    union all
    select 'fct_triage_visits' as model_name, triage_visit_id as fact_id, facility_id, patient_id
    from triage_visits

),

final as (

    select fact_rows.*
    from fact_rows
    inner join patients
        on fact_rows.patient_id = patients.patient_id
    where fact_rows.facility_id <> patients.facility_id

)

select * from final
