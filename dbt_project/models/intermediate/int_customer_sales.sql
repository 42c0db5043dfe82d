{#-
    One row per customer with a purchase dated <= D: the counts and amounts int_customer_rfm
    scores. A purchase is a kept (not cancelled) membership, dated purchased_on, or a service
    purchase, dated its local purchase date.

    Incremental. A customer's row changes only when their purchases change (memberships or
    service purchases (re)loaded since the latest _loaded_at held, or the customer reloaded:
    the time zone dates their purchases), or when D crosses one of their sale dates: a sale
    dated in (L, D] becomes known, one dated in [L - 364, D - 365] leaves the 365-day window
    (L = the latest derived_as_of held). A build sums again only those customers and replaces
    their rows; a customer left without a purchase drops out (insert_where). A build of D
    before L sums every customer. A purchase deleted from raw needs a full refresh.
-#}
-- depends_on: {{ ref('stg_club__customers') }}
{%- set state = derived_state() -%}
{%- set last_derived, watermark, rewinding = state.last_derived, state.watermark,
    state.rewinding -%}

{#- The unique index is the key's test: a duplicate fails the build (no `unique` test). -#}
{{ config(
    materialized='incremental',
    incremental_strategy='delete_insert_where',
    unique_key=['customer_id'],
    insert_where='lifetime_purchases > 0',
    on_schema_change='fail',
    post_hook=[
        "{{ set_not_null_columns() }}",
        "{{ ensure_index(this, ['customer_id'], unique=true) }}",
        "analyze {{ this }}",
    ],
) }}

-- not materialized: an incremental build must reach the sources' customer indexes
with

memberships as not materialized (

    select * from {{ ref('stg_club__memberships') }}

),

purchases as not materialized (

    select * from {{ ref('int_purchases_classified') }}

),

{% if is_incremental() %}

-- the customers whose sums may differ from the stored ones (every customer when rewinding)
summed_customers as materialized (

    select memberships.customer_id
    from memberships
    where
        {{ rewinding }}
        or memberships._loaded_at > {{ watermark }}
        or (
            memberships.purchased_on > {{ last_derived }}
            and memberships.purchased_on <= {{ as_of_date() }}
        )
        or (
            memberships.purchased_on >= {{ last_derived }} - 364
            and memberships.purchased_on <= {{ as_of_date() }} - 365
        )

    union

    select purchases.customer_id
    from purchases
    where
        {{ rewinding }}
        or purchases._loaded_at > {{ watermark }}
        or (
            purchases.purchase_date > {{ last_derived }}
            and purchases.purchase_date <= {{ as_of_date() }}
        )
        or (
            purchases.purchase_date >= {{ last_derived }} - 364
            and purchases.purchase_date <= {{ as_of_date() }} - 365
        )

    union

    select customers.customer_id
    from {{ ref('stg_club__customers') }} as customers
    where customers._loaded_at > {{ watermark }}

),

{% endif %}

sales as (

    -- a cancelled membership is no sale (no date: counted nowhere), but it is read: a
    -- customer whose only membership was cancelled must come out with no purchase
    select
        memberships.customer_id,
        case when not memberships.is_cancelled then memberships.purchased_on end as sold_on,
        memberships.price as amount,
        memberships._loaded_at
    from memberships
    {%- if is_incremental() %}
    where memberships.customer_id in (select customer_id from summed_customers)
    {%- endif %}

    union all

    select
        purchases.customer_id,
        purchases.purchase_date as sold_on,
        purchases.amount,
        purchases._loaded_at
    from purchases
    {%- if is_incremental() %}
    where purchases.customer_id in (select customer_id from summed_customers)
    {%- endif %}

),

final as (

    -- sales after D are read and not counted: a build must see that a customer it sums
    -- again has none by D (insert_where then drops the row)
    select
        customer_id,
        {{ as_of_date() }} as derived_as_of,
        cast(count(*) filter (where sold_on <= {{ as_of_date() }}) as integer)
            as lifetime_purchases,
        max(sold_on) filter (where sold_on <= {{ as_of_date() }}) as last_purchased_on,
        cast(count(*) filter (
            where sold_on between {{ as_of_date() }} - 364 and {{ as_of_date() }}
        ) as integer) as rfm_frequency,
        cast(coalesce(sum(amount) filter (
            where sold_on between {{ as_of_date() }} - 364 and {{ as_of_date() }}
        ), 0) as numeric(14, 2)) as rfm_monetary,
        max(_loaded_at) as _loaded_at
    from sales
    group by customer_id
    {%- if not is_incremental() %}
    having count(*) filter (where sold_on <= {{ as_of_date() }}) > 0
    {%- endif %}

)

select * from final
