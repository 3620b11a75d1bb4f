{#
    One row per facility per calendar day from its first to its last triage visit (days without visits
    included, as zeros, so that the 7-day windows count days, not rows). Daily volume, priority mix, the
    7-day moving average and the change on the 7 days before. De-identified. Feeds BI and the API.
#}
with

daily_visits as (

    -- One row per facility and day with visits, kept up to date incrementally.
    select * from {{ ref('int_triage_visits_daily') }}

),

facilities as (

    select * from {{ ref('dim_facilities') }}

),

facility_days as (

    select
        facility_id,
        generate_series(min(visit_date), max(visit_date), interval '1 day')::date as visit_date
    from daily_visits
    group by 1

),

every_day as (

    select
        facility_days.facility_id,
        facility_days.visit_date,
        coalesce(daily_visits.visit_count, 0) as visit_count,
        coalesce(daily_visits.critical_count, 0) as critical_count,
        coalesce(daily_visits.high_count, 0) as high_count,
        coalesce(daily_visits.medium_count, 0) as medium_count,
        coalesce(daily_visits.low_count, 0) as low_count
    from facility_days
    left join daily_visits
        on facility_days.facility_id = daily_visits.facility_id
        and facility_days.visit_date = daily_visits.visit_date

),

windowed as (

    select
        *,
        cast(sum(visit_count) over last_7_days as bigint) as visit_count_7d,
        count(*) over last_7_days as days_in_window,
        cast(sum(visit_count) over previous_7_days as bigint) as visit_count_prev_7d,
        count(*) over previous_7_days as days_in_previous_window
    from every_day
    window
        last_7_days as (partition by facility_id order by visit_date rows between 6 preceding and current row),
        previous_7_days as (partition by facility_id order by visit_date rows between 13 preceding and 7 preceding)

),

final as (

    select
        windowed.facility_id,
        facilities.facility_name,
        facilities.state,
        windowed.visit_date,
        windowed.visit_count,
        windowed.critical_count,
        windowed.high_count,
        windowed.medium_count,
        windowed.low_count,
        round((windowed.critical_count + windowed.high_count)::numeric / nullif(windowed.visit_count, 0), 4)
            as urgent_share,
        windowed.visit_count_7d,
        round(windowed.visit_count_7d::numeric / windowed.days_in_window, 2) as visit_count_7d_avg,
        windowed.days_in_window = 7 as is_full_window,
        -- Compared only when both windows are whole weeks; a share of 0.25 means 25% more visits.
        case when windowed.days_in_previous_window = 7 then windowed.visit_count_prev_7d end as visit_count_prev_7d,
        case when windowed.days_in_previous_window = 7 and windowed.days_in_window = 7 then
            round((windowed.visit_count_7d - windowed.visit_count_prev_7d)::numeric
                  / nullif(windowed.visit_count_prev_7d, 0), 4)
        end as week_over_week_change,
        cast('{{ run_started_at.isoformat() }}' as timestamptz) as built_at
    from windowed
    inner join facilities
        on windowed.facility_id = facilities.facility_id

)

select * from final
