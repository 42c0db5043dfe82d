{{ config(post_hook=[
    "{{ ensure_index(this, ['customer_id', 'service'], unique=true) }}",
    "analyze {{ this }}",
]) }}

with

customers as (

    select * from {{ ref('stg_club__customers') }}

),

purchases as (

    select * from {{ ref('int_purchases_classified') }}

),

memberships as (

    select * from {{ ref('int_memberships_enriched') }}

),

as_of as (

    select {{ as_of_date() }} as as_of_date

),

current_membership as (

    select
        customer_id,
        purchased_on
    from memberships
    where is_current

),

purchases_on_as_of as (

    -- purchases dated <= D of customers who exist on D (the customers of customer_facts)
    select
        purchases.*,
        as_of.as_of_date
    from purchases
    cross join as_of
    inner join customers
        on
            purchases.customer_id = customers.customer_id
            and customers.customer_since <= as_of.as_of_date
    where purchases.purchase_date <= as_of.as_of_date

),

per_service as (

    select
        purchases_on_as_of.customer_id,
        purchases_on_as_of.service,
        purchases_on_as_of.as_of_date,
        min(purchases_on_as_of.category) as category,
        count(*) as purchases_total,
        min(purchases_on_as_of.purchase_date) as first_purchased_on,
        max(purchases_on_as_of.purchase_date) as last_purchased_on,
        count(*) filter (
            where purchases_on_as_of.purchase_date >= current_membership.purchased_on
        ) as purchases_since_membership_purchase,
        count(*) filter (
            where purchases_on_as_of.purchase_date >= purchases_on_as_of.as_of_date - 29
        ) as purchases_last_30d,
        count(*) filter (
            where purchases_on_as_of.purchase_date >= purchases_on_as_of.as_of_date - 89
        ) as purchases_last_90d,
        sum(purchases_on_as_of.amount) as amount_total
    from purchases_on_as_of
    left join current_membership
        on purchases_on_as_of.customer_id = current_membership.customer_id
    group by
        purchases_on_as_of.customer_id,
        purchases_on_as_of.service,
        purchases_on_as_of.as_of_date

),

final as (

    select
        cast(customer_id as text) as customer_id,
        cast(service as text) as service,
        cast(category as text) as category,
        cast(as_of_date as date) as as_of_date,
        cast(purchases_total as integer) as purchases_total,
        cast(first_purchased_on as date) as first_purchased_on,
        cast(last_purchased_on as date) as last_purchased_on,
        cast(purchases_since_membership_purchase as integer)
            as purchases_since_membership_purchase,
        cast(purchases_last_30d as integer) as purchases_last_30d,
        cast(purchases_last_90d as integer) as purchases_last_90d,
        cast(amount_total as numeric(14, 2)) as amount_total
    from per_service

)

select * from final
