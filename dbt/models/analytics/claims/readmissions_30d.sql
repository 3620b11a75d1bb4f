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

-- The same table again for the coverage date: each import read once, so Postgres inlines both rather than
-- materialising all of fct_claims for two readers.
claim_dates as (

    select service_to_date, discharge_date from {{ ref('fct_claims') }}

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

-- Stays followed by another admission of the same member within the window. A join on the member rather than
-- an EXISTS in the select list: Postgres turns only a WHERE's EXISTS into a join, and the select list's ran once
-- per stay over every stay (3,000,000 claim lines: 187 s, against seconds this way).
readmitted_stays as (

    select distinct
        stays.payer,
        stays.member_key,
        stays.admit_date,
        stays.discharge_date
    from stays
    inner join stays as later_stays
        on later_stays.payer = stays.payer
        and later_stays.member_key = stays.member_key
    where later_stays.admit_date > stays.admit_date
        and later_stays.admit_date between stays.discharge_date and stays.discharge_date + {{ window_days }}

),

index_stays as (

    select
        stays.*,
        readmitted_stays.payer is not null as is_readmitted
    from stays
    left join readmitted_stays
        on readmitted_stays.payer = stays.payer
        and readmitted_stays.member_key = stays.member_key
        and readmitted_stays.admit_date = stays.admit_date
        and readmitted_stays.discharge_date = stays.discharge_date

),

-- The last day any claim reaches: a month's follow-up is complete when the data goes window_days past its end.
coverage as (

    select max(greatest(service_to_date, discharge_date)) as last_covered_date
    from claim_dates

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
