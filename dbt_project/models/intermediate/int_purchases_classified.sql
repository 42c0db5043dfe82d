{#- A table: int_customer_rfm, both marts and the tests read it; it joins every purchase to
    its customer for the local date, once per build instead of once per reader.

    Incremental: a build classifies again the purchases (re)loaded since the latest raw
    _loaded_at held, and those whose stored time zone or category no longer matches (the
    customer's time zone was cleaned again, the catalog changed); the rest keep their rows.
    A purchase deleted from raw needs a full refresh. -#}
{%- set watermark = high_water_mark() %}

{#- The unique index is the key's test: a duplicate fails the build (no `unique` test);
    (customer_id) finds the purchases int_customer_sales sums again. -#}
{{ config(
    materialized='incremental',
    incremental_strategy='delete_insert_where',
    unique_key=['purchase_id'],
    on_schema_change='fail',
    post_hook=[
        "{{ set_not_null_columns() }}",
        "{{ ensure_index(this, ['purchase_id'], unique=true) }}",
        "{{ ensure_index(this, ['customer_id']) }}",
        "analyze {{ this }}",
    ],
) }}

with

purchases as not materialized (

    select * from {{ ref('stg_club__purchases') }}

),

customers as not materialized (

    select * from {{ ref('stg_club__customers') }}

),

services as not materialized (

    select * from {{ ref('int_services_catalog') }}

),

{% if is_incremental() %}

-- the purchases to classify again: (re)loaded since, or classified with another time zone
-- or category than they would get now
batch as (

    select purchases.*
    from purchases
    where purchases._loaded_at > {{ watermark }}

    union all

    select purchases.*
    from purchases
    where
        purchases._loaded_at <= {{ watermark }}
        and purchases.purchase_id in (
            select stored.purchase_id
            from {{ this }} as stored
            inner join customers
                on stored.customer_id = customers.customer_id
            left join services
                on stored.service = services.service
            where
                stored.timezone is distinct from customers.timezone
                or stored.category is distinct from coalesce(services.category, 'other')
        )

),

{% else %}

batch as (

    select * from purchases

),

{% endif %}

final as (

    select
        batch.purchase_id,
        batch.customer_id,
        batch.service,
        -- a service missing from the catalog is neither an add-on nor a cross-sell
        coalesce(services.category, 'other') as category,
        batch.purchased_at,
        {{ local_date('batch.purchased_at', 'customers.timezone') }} as purchase_date,
        batch.amount,
        customers.timezone,
        batch._loaded_at
    from batch
    inner join customers
        on batch.customer_id = customers.customer_id
    left join services
        on batch.service = services.service

)

select * from final
