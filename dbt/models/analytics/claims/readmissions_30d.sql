{#
    One row per rendering provider (NPI) of the index stay per month of discharge: inpatient stays, those
    followed by another admission of the same member (same payer, any provider, any cause) within
    var('claims_readmission_window_days') days of discharge, and the rate. UNADJUSTED, ALL-CAUSE: not the CMS
    Hospital Readmissions Reduction Program methodology (no risk adjustment, no planned-readmission or transfer
    exclusions, no condition cohorts). De-identified: counts under disclosure control.
#}
{%- set window_days = var('claims_readmission_window_days') | int -%}
with

claims as (

    select * from {{ ref('fct_claims') }}

),

-- One stay per member, admission and discharge (several claims may bill the same stay: the lowest claim id's
-- provider is the stay's); denied claims are not stays.
stays as (

    select distinct on (payer, member_key, admit_date, discharge_date)
        payer,
        member_key,
        admit_date,
        discharge_date,
        rendering_npi
    from claims
    where admit_date is not null
        and discharge_date is not null
        and rendering_npi is not null
        and claim_status is distinct from 'denied'
    order by payer, member_key, admit_date, discharge_date, claim_id

),

index_stays as (

    select
        stays.*,
        exists (
            select 1
            from stays as later_stays
            where later_stays.payer = stays.payer
                and later_stays.member_key = stays.member_key
                and later_stays.admit_date > stays.admit_date
                and later_stays.admit_date between stays.discharge_date
                    and stays.discharge_date + {{ window_days }}
        ) as is_readmitted
    from stays

),

-- The last day any claim reaches: a month's follow-up is complete when the data goes window_days past its end.
coverage as (

    select max(greatest(service_to_date, discharge_date)) as last_covered_date
    from claims

),

monthly as (

    select
        rendering_npi,
        cast(date_trunc('month', discharge_date) as date) as discharge_month,
        count(*) as index_stay_count,
        count(*) filter (where is_readmitted) as readmitted_stay_count
    from index_stays
    group by 1, 2

),

marked as (

    select
        *,
        {{ sdc_is_small('index_stay_count') }} as is_index_stay_count_suppressed,
        {{ sdc_is_small('index_stay_count') }} or {{ sdc_is_small('readmitted_stay_count') }}
            as is_readmitted_stay_count_suppressed
    from monthly

),

published as (

    select
        *,
        {{ sdc_publish('index_stay_count', 'is_index_stay_count_suppressed') }} as published_index_stay_count,
        {{ sdc_publish('readmitted_stay_count', 'is_readmitted_stay_count_suppressed') }}
            as published_readmitted_stay_count
    from marked

),

final as (

    select
        published.rendering_npi,
        published.discharge_month,
        published.published_index_stay_count as index_stay_count,
        published.published_readmitted_stay_count as readmitted_stay_count,
        -- From the published counts, so it says no more than they do.
        round(published.published_readmitted_stay_count::numeric
              / nullif(published.published_index_stay_count, 0), 4) as readmission_rate,
        coverage.last_covered_date
            >= cast(published.discharge_month + interval '1 month' as date) - 1 + {{ window_days }}
            as is_follow_up_complete,
        published.is_index_stay_count_suppressed,
        published.is_readmitted_stay_count_suppressed,
        cast('{{ run_started_at.isoformat() }}' as timestamptz) as built_at
    from published
    cross join coverage

)

select * from final
