{#
    KH03: a trust's specialty shares in a quarter add up to 1 (when it had occupied beds at all): every
    occupied bed on the specialty sheet is counted in exactly one specialty. Returns the trust quarters
    whose shares do not.
#}
with

specialty_occupancy as (

    select * from {{ ref('specialty_occupancy') }}

),

final as (

    select
        org_code,
        financial_year,
        quarter,
        sum(share_of_trust_occupied) as share_sum
    from specialty_occupancy
    group by 1, 2, 3
    having sum(beds_occupied) > 0
        and abs(sum(share_of_trust_occupied) - 1) > 0.000001

)

select * from final
