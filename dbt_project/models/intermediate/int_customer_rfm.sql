{#-
    RFM as in Exponea's lifecycle model, over int_customer_sales (a purchase is a kept
    membership or a service purchase, dated <= D; frequency and monetary over [D-364, D]).
    Scores are quintiles over the customers who exist on D and bought at
    least once: ntile(5) over the customers ordered by the metric, where customers tied on it
    all take the group of the first of them (macros/ntile_of_rank.sql), so equal values never
    get different scores and a day always scores the same.
-#}

{#- The unique index is the key's test: a duplicate fails the build (no `unique` test). -#}
{{ config(
    materialized='table',
    post_hook=[
        "{{ ensure_index(this, ['customer_id'], unique=true) }}",
        "analyze {{ this }}",
    ],
) }}

with

customers as (

    select * from {{ ref('stg_club__customers') }}

),

sales as (

    select * from {{ ref('int_customer_sales') }}

),

-- materialized: read once here, then by each metric's positions and the scoring below
buyers as materialized (

    select
        sales.customer_id,
        sales.lifetime_purchases,
        sales.last_purchased_on,
        sales.rfm_frequency,
        sales.rfm_monetary
    from sales
    inner join customers
        on sales.customer_id = customers.customer_id
    where customers.customer_since <= {{ as_of_date() }}

),

buyers_total as (

    select count(*) as buyers_total from buyers

),

-- rank() of each distinct value, without sorting the buyers: one plus the number of buyers
-- with a smaller value (a few thousand distinct dates and amounts instead of 1M rows, three
-- times). The longest ago first: the most recent buyers land in the fifth group.
recency_positions as (

    select
        last_purchased_on,
        cast(sum(count(*)) over (order by last_purchased_on) - count(*) + 1 as bigint) as r_position
    from buyers
    group by last_purchased_on

),

frequency_positions as (

    select
        rfm_frequency,
        cast(sum(count(*)) over (order by rfm_frequency) - count(*) + 1 as bigint) as f_position
    from buyers
    group by rfm_frequency

),

monetary_positions as (

    select
        rfm_monetary,
        cast(sum(count(*)) over (order by rfm_monetary) - count(*) + 1 as bigint) as m_position
    from buyers
    group by rfm_monetary

),

final as (

    select
        buyers.customer_id,
        {{ as_of_date() }} as as_of_date,
        cast(buyers.lifetime_purchases as integer) as lifetime_purchases,
        buyers.last_purchased_on,
        cast({{ as_of_date() }} - buyers.last_purchased_on as integer) as rfm_recency_days,
        cast(buyers.rfm_frequency as integer) as rfm_frequency,
        cast(buyers.rfm_monetary as numeric(14, 2)) as rfm_monetary,
        cast({{ ntile_of_rank('recency_positions.r_position', 'buyers_total.buyers_total', 5) }}
            as integer) as r_score,
        cast({{ ntile_of_rank('frequency_positions.f_position', 'buyers_total.buyers_total', 5) }}
            as integer) as f_score,
        cast({{ ntile_of_rank('monetary_positions.m_position', 'buyers_total.buyers_total', 5) }}
            as integer) as m_score
    from buyers
    cross join buyers_total
    inner join recency_positions
        on buyers.last_purchased_on = recency_positions.last_purchased_on
    inner join frequency_positions
        on buyers.rfm_frequency = frequency_positions.rfm_frequency
    inner join monetary_positions
        on buyers.rfm_monetary = monetary_positions.rfm_monetary

)

select * from final
