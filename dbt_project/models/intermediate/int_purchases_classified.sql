{#- A table: int_customer_rfm, both marts and the tests read it; it joins every purchase to
    its customer for the local date, once per build instead of once per reader. -#}
{#- The unique index is the key's test: a duplicate fails the build (no `unique` test). -#}
{{ config(materialized='table', post_hook=[
    "create unique index on {{ this }} (purchase_id)",
    "analyze {{ this }}",
]) }}

with

purchases as (

    select * from {{ ref('stg_club__purchases') }}

),

customers as (

    select * from {{ ref('stg_club__customers') }}

),

services as (

    select * from {{ ref('int_services_catalog') }}

),

final as (

    select
        purchases.purchase_id,
        purchases.customer_id,
        purchases.service,
        -- a service missing from the catalog is neither an add-on nor a cross-sell
        coalesce(services.category, 'other') as category,
        purchases.purchased_at,
        {{ local_date('purchases.purchased_at', 'customers.timezone') }} as purchase_date,
        purchases.amount
    from purchases
    inner join customers
        on purchases.customer_id = customers.customer_id
    left join services
        on purchases.service = services.service

)

select * from final
