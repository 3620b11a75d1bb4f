{#
    One row per facility per calendar month with triage visits or medical records: monthly volumes,
    the daily average over the month's reporting days, acuity. De-identified: every count passes disclosure
    control (macros/disclosure_control.sql), and a month whose visits are withheld shows nothing else about
    them. Feeds BI and the API.
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
        cast(sum(triage_level_sum) as bigint) as triage_level_sum
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

monthly as (

    select
        coalesce(monthly_visits.facility_id, monthly_records.facility_id) as facility_id,
        coalesce(monthly_visits.month_start, monthly_records.month_start) as month_start,
        coalesce(monthly_visits.triage_visit_count, 0) as triage_visit_count,
        coalesce(monthly_visits.urgent_visit_count, 0) as urgent_visit_count,
        coalesce(monthly_visits.visit_days, 0) as visit_days,
        monthly_visits.triage_level_sum,
        coalesce(monthly_records.medical_record_count, 0) as medical_record_count
    from monthly_visits
    full outer join monthly_records
        on monthly_visits.facility_id = monthly_records.facility_id
        and monthly_visits.month_start = monthly_records.month_start

),

marked as (

    select
        *,
        {{ sdc_is_small('triage_visit_count') }} as is_triage_visit_count_suppressed,
        -- A part of a withheld group is withheld with it (zeros too).
        {{ sdc_is_small('triage_visit_count') }} or {{ sdc_is_small('urgent_visit_count') }}
            as is_urgent_visit_count_suppressed,
        {{ sdc_is_small('medical_record_count') }} as is_medical_record_count_suppressed
    from monthly

),

published as (

    select
        *,
        {{ sdc_publish('triage_visit_count', 'is_triage_visit_count_suppressed') }} as published_triage_visit_count,
        {{ sdc_publish('urgent_visit_count', 'is_urgent_visit_count_suppressed') }} as published_urgent_visit_count
    from marked

),

final as (

    select
        published.facility_id,
        facilities.facility_name,
        facilities.state,
        published.month_start,
        published.published_triage_visit_count as triage_visit_count,
        published.published_urgent_visit_count as urgent_visit_count,
        case when not published.is_triage_visit_count_suppressed then published.visit_days end as visit_days,
        -- Visits per day that had any visit (months are often partly covered by the drops), and the urgent
        -- share: from the published counts, so they say no more than the counts do.
        round(published.published_triage_visit_count::numeric / nullif(published.visit_days, 0), 2)
            as avg_daily_visits,
        round(published.published_urgent_visit_count::numeric / nullif(published.published_triage_visit_count, 0), 4)
            as urgent_share,
        -- A mean over at least threshold visits; withheld with the visit count.
        case when not published.is_triage_visit_count_suppressed then
            round(published.triage_level_sum::numeric / nullif(published.triage_visit_count, 0), 2)
        end as avg_triage_level,
        {{ sdc_publish('published.medical_record_count', 'published.is_medical_record_count_suppressed') }}
            as medical_record_count,
        published.is_triage_visit_count_suppressed,
        published.is_urgent_visit_count_suppressed,
        published.is_medical_record_count_suppressed,
        cast('{{ run_started_at.isoformat() }}' as timestamptz) as built_at
    from published
    inner join facilities
        on published.facility_id = facilities.facility_id

)

select * from final
