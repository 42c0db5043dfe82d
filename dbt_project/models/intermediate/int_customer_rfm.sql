{#-
    RFM as in Exponea's lifecycle model, over int_customer_sales (a purchase is a kept
    membership or a service purchase, dated <= D; frequency and monetary over [D-364, D]).
    Every buyer existing on D gets scores 1..5: quintiles over the repeat buyers (two or more
    purchases), the customers the R/F grid segments; guests and first-time buyers have their
    own segments, and scoring them too would fill the lowest groups with one huge tie (half
    the buyers with one purchase). A first-time buyer is scored against the same boundaries.
    Ties (macros/rfm_score.sql): a value takes the ntile(5) group of its first position, but
    at most one score above the next lower value's, so a tie spanning a boundary never
    leaves a score empty while distinct values remain. A day always scores the same.
-#}

{#- The unique index is the key's test: a duplicate fails the build (no `unique` test). -#}
{{ config(
    materialized='table',
    post_hook=[
        "{{ set_not_null_columns() }}",
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

-- materialized: read once here, then by the count, each metric's scores and the final rows
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

-- who sets the boundaries: the repeat buyers; without any, every buyer
scored_total as (

    select
        count(*) filter (where lifetime_purchases >= 2) > 0 as by_repeat_buyers,
        coalesce(nullif(count(*) filter (where lifetime_purchases >= 2), 0), count(*))
            as scored_total
    from buyers

),

-- each distinct value's score from the counts of the scored buyers per value, without
-- sorting the buyers (a few thousand distinct dates and amounts instead of 1M rows, three
-- times). Recency is ordered longest ago first: the most recent buyers land in the fifth group.
recency_scores as (

    {{ rfm_score('buyers', 'last_purchased_on', 'scored_total') }}

),

frequency_scores as (

    {{ rfm_score('buyers', 'rfm_frequency', 'scored_total') }}

),

monetary_scores as (

    {{ rfm_score('buyers', 'rfm_monetary', 'scored_total') }}

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
        cast(recency_scores.score as integer) as r_score,
        cast(frequency_scores.score as integer) as f_score,
        cast(monetary_scores.score as integer) as m_score
    from buyers
    inner join recency_scores
        on buyers.last_purchased_on = recency_scores.metric
    inner join frequency_scores
        on buyers.rfm_frequency = frequency_scores.metric
    inner join monetary_scores
        on buyers.rfm_monetary = monetary_scores.metric

)

select * from final
