{#
    One row per facility, identified by (name, state, lga). facility_id is an md5 of that normalised key,
    so it survives reloads and re-orderings; when a facility appears in several files the latest file wins.
#}
with

facilities as (

    select * from {{ ref('stg_medilink__facilities') }}

),

keyed_facilities as (

    select
        {{ surrogate_key(['lower(facility_name)', 'lower(state)', 'lower(lga)']) }} as facility_id,
        facility_name,
        state,
        lga,
        latitude,
        longitude,
        facility_type,
        reported_date,
        file_id,
        source_row_number
    from facilities

),

ranked_facilities as (

    select
        *,
        row_number() over (
            partition by facility_id
            order by reported_date desc nulls last, file_id desc, source_row_number desc
        ) as recency_rank,
        min(reported_date) over (partition by facility_id) as first_reported_date,
        max(reported_date) over (partition by facility_id) as last_reported_date
    from keyed_facilities

),

latest_facilities as (

    select * from ranked_facilities
    where recency_rank = 1

),

final as (

    select
        facility_id,
        facility_name,
        state,
        lga,
        latitude,
        longitude,
        facility_type,
        -- Records name their facility only; a name shared by two facilities cannot be resolved.
        count(*) over (partition by lower(facility_name)) = 1 as is_name_unique,
        first_reported_date,
        last_reported_date,
        file_id,
        cast('{{ run_started_at.isoformat() }}' as timestamptz) as built_at
    from latest_facilities

)

select * from final
