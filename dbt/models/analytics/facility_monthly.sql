{#
    One row per facility per calendar month with triage visits or medical records: monthly volumes,
    the daily average over the month's reporting days, acuity. De-identified. Feeds BI and the API.
#}
with

daily_visits as (

    select * from {{ ref('int_triage_visits_daily') }}

),

daily_records as (

    select * from {{ ref('int_medical_records_daily') }}

),

facilities as (

    select * from {{ ref('dim_facilities') }}

),

monthly_visits as (

    select
        facility_id,
        cast(date_trunc('month', visit_date) as date) as month_start,
        cast(sum(visit_count) as bigint) as triage_visit_count,
        cast(sum(urgent_count) as bigint) as urgent_visit_count,
        count(*) as visit_days,
        round(sum(triage_level_sum)::numeric / sum(visit_count), 2) as avg_triage_level
    from daily_visits
    group by 1, 2

),

monthly_records as (

    select
        facility_id,
        cast(date_trunc('month', record_date) as date) as month_start,
        cast(sum(record_count) as bigint) as medical_record_count
    from daily_records
    group by 1, 2

),

final as (

    select
        coalesce(monthly_visits.facility_id, monthly_records.facility_id) as facility_id,
        facilities.facility_name,
        facilities.state,
        coalesce(monthly_visits.month_start, monthly_records.month_start) as month_start,
        coalesce(monthly_visits.triage_visit_count, 0) as triage_visit_count,
        coalesce(monthly_visits.urgent_visit_count, 0) as urgent_visit_count,
        coalesce(monthly_visits.visit_days, 0) as visit_days,
        -- Visits per day that had any visit: months are often partly covered by the drops.
        round(monthly_visits.triage_visit_count::numeric / nullif(monthly_visits.visit_days, 0), 2)
            as avg_daily_visits,
        round(monthly_visits.urgent_visit_count::numeric / nullif(monthly_visits.triage_visit_count, 0), 4)
            as urgent_share,
        monthly_visits.avg_triage_level,
        coalesce(monthly_records.medical_record_count, 0) as medical_record_count,
        cast('{{ run_started_at.isoformat() }}' as timestamptz) as built_at
    from monthly_visits
    full outer join monthly_records
        on monthly_visits.facility_id = monthly_records.facility_id
        and monthly_visits.month_start = monthly_records.month_start
    inner join facilities
        on coalesce(monthly_visits.facility_id, monthly_records.facility_id) = facilities.facility_id

)

select * from final
