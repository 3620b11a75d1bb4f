{#
    One row per facility per calendar day from its first to its last triage visit (days without visits
    included, as zeros, so that the 7-day windows count days, not rows). Daily volume, priority mix, the
    7-day moving average and the change on the 7 days before. De-identified: every count passes disclosure
    control (macros/disclosure_control.sql), the priority mix is shown whole or not at all, and the averages,
    shares and changes are worked out from the published counts. Feeds BI and the API.
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

marked as (

    select
        *,
        {{ sdc_is_small('visit_count') }} as is_visit_count_suppressed,
        -- The mix adds up to the day's visits: one part withheld would be the total minus the others, so
        -- the mix is published whole or withheld whole (zeros too), and always with the day's count.
        {{ sdc_is_small('visit_count') }}
            or {{ sdc_is_small('critical_count') }} or {{ sdc_is_small('high_count') }}
            or {{ sdc_is_small('medium_count') }} or {{ sdc_is_small('low_count') }} as is_priority_mix_suppressed,
        {{ sdc_is_small('visit_count_7d') }} as is_visit_count_7d_suppressed,
        days_in_previous_window = 7 and {{ sdc_is_small('visit_count_prev_7d') }} as is_visit_count_prev_7d_suppressed
    from windowed

),

published as (

    select
        facility_id,
        visit_date,
        days_in_window,
        days_in_previous_window,
        {{ sdc_publish('visit_count', 'is_visit_count_suppressed') }} as visit_count,
        {{ sdc_publish('critical_count', 'is_priority_mix_suppressed') }} as critical_count,
        {{ sdc_publish('high_count', 'is_priority_mix_suppressed') }} as high_count,
        {{ sdc_publish('medium_count', 'is_priority_mix_suppressed') }} as medium_count,
        {{ sdc_publish('low_count', 'is_priority_mix_suppressed') }} as low_count,
        {{ sdc_publish('visit_count_7d', 'is_visit_count_7d_suppressed') }} as visit_count_7d,
        -- Compared only when the window before is a whole week.
        case when days_in_previous_window = 7 then
            {{ sdc_publish('visit_count_prev_7d', 'is_visit_count_prev_7d_suppressed') }}
        end as visit_count_prev_7d,
        is_visit_count_suppressed,
        is_priority_mix_suppressed,
        is_visit_count_7d_suppressed,
        is_visit_count_prev_7d_suppressed
    from marked

),

final as (

    select
        published.facility_id,
        facilities.facility_name,
        facilities.state,
        published.visit_date,
        published.visit_count,
        published.critical_count,
        published.high_count,
        published.medium_count,
        published.low_count,
        -- Of the published mix (each part rounded on its own, so the parts need not add up to visit_count).
        round((published.critical_count + published.high_count)::numeric
              / nullif(published.critical_count + published.high_count + published.medium_count + published.low_count, 0), 4)
            as urgent_share,
        published.visit_count_7d,
        round(published.visit_count_7d::numeric / published.days_in_window, 2) as visit_count_7d_avg,
        published.days_in_window = 7 as is_full_window,
        published.visit_count_prev_7d,
        -- A share of 0.25 means 25% more visits than the week before.
        case when published.days_in_window = 7 then
            round((published.visit_count_7d - published.visit_count_prev_7d)::numeric
                  / nullif(published.visit_count_prev_7d, 0), 4)
        end as week_over_week_change,
        published.is_visit_count_suppressed,
        published.is_priority_mix_suppressed,
        published.is_visit_count_7d_suppressed,
        published.is_visit_count_prev_7d_suppressed,
        cast('{{ run_started_at.isoformat() }}' as timestamptz) as built_at
    from published
    inner join facilities
        on published.facility_id = facilities.facility_id

)

select * from final
