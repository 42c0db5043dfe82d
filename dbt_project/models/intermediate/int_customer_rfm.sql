{#-
    RFM as in Exponea's lifecycle model: a purchase is a kept (not cancelled) membership,
    dated purchased_on, or a service purchase, dated its local purchase date; only purchases
    dated <= D count. Scores are quintiles over the customers who exist on D and bought at
    least once: ntile(5) over the customers ordered by the metric, where customers tied on it
    all take the group of the first of them (macros/ntile_of_rank.sql), so equal values never
    get different scores and a day always scores the same.
-#}

{{ config(materialized='table', post_hook=["analyze {{ this }}"]) }}

with

customers as (

    select * from {{ ref('stg_club__customers') }}

),

-- staging, not int_memberships_enriched: the same rows once filtered to D, and this model
-- then builds beside that one instead of after it (both take seconds at 1M customers)
memberships as (

    select * from {{ ref('stg_club__memberships') }}

),

purchases as (

    select * from {{ ref('int_purchases_classified') }}

),

as_of as (

    select {{ as_of_date() }} as as_of_date

),

sales as (

    -- a membership bought after D did not exist on D
    select
        memberships.customer_id,
        memberships.purchased_on as sold_on,
        memberships.price as amount
    from memberships
    cross join as_of
    where
        not memberships.is_cancelled
        and memberships.purchased_on <= as_of.as_of_date

    union all

    select
        purchases.customer_id,
        purchases.purchase_date as sold_on,
        purchases.amount
    from purchases
    cross join as_of
    where purchases.purchase_date <= as_of.as_of_date

),

buyers as (

    select
        sales.customer_id,
        as_of.as_of_date,
        count(*) as lifetime_purchases,
        max(sales.sold_on) as last_purchased_on,
        count(*) filter (where sales.sold_on >= as_of.as_of_date - 364) as rfm_frequency,
        coalesce(sum(sales.amount) filter (where sales.sold_on >= as_of.as_of_date - 364), 0)
            as rfm_monetary
    from sales
    cross join as_of
    inner join customers
        on
            sales.customer_id = customers.customer_id
            and customers.customer_since <= as_of.as_of_date
    group by sales.customer_id, as_of.as_of_date

),

ranked as (

    -- rank(): a tie's first position, so every customer of a tie gets the same group
    select
        *,
        as_of_date - last_purchased_on as rfm_recency_days,
        count(*) over () as buyers_total,
        -- the longest ago first: the most recent buyers land in the fifth group
        rank() over (order by last_purchased_on) as r_position,
        rank() over (order by rfm_frequency) as f_position,
        rank() over (order by rfm_monetary) as m_position
    from buyers

),

final as (

    select
        customer_id,
        as_of_date,
        cast(lifetime_purchases as integer) as lifetime_purchases,
        last_purchased_on,
        cast(rfm_recency_days as integer) as rfm_recency_days,
        cast(rfm_frequency as integer) as rfm_frequency,
        cast(rfm_monetary as numeric(14, 2)) as rfm_monetary,
        cast({{ ntile_of_rank('r_position', 'buyers_total', 5) }} as integer) as r_score,
        cast({{ ntile_of_rank('f_position', 'buyers_total', 5) }} as integer) as f_score,
        cast({{ ntile_of_rank('m_position', 'buyers_total', 5) }} as integer) as m_score
    from ranked

)

select * from final
