{#-
    One row per customer with check-ins: the latest visit day held and the running total on
    it, and the running total before the day the customer's current membership was bought
    (counted_since), so customer_facts reads visits_total, last_visit_date and
    visits_since_purchase without looking into int_visits_daily for every customer. Not
    filtered by the as-of date: customer_facts uses a row only when it applies on D (the
    latest visit day <= D, counted_since = the current membership's purchased_on) and looks
    the rest up as before.

    Incremental: a build derives again the customers whose days int_visits_daily (re)wrote
    since the last build (its _loaded_at newer than the latest held here) and those whose
    current membership's purchased_on is not the counted_since held (a new membership, or a
    build of another D); a customer whose days are all gone drops out (insert_where).
-#}
{%- set watermark = high_water_mark() %}

{{ config(
    materialized='incremental',
    incremental_strategy='delete_insert_where',
    unique_key=['customer_id'],
    insert_where='last_visit_date is not null',
    on_schema_change='fail',
    post_hook=[
        "{{ set_not_null_columns() }}",
        "{{ ensure_index(this, ['customer_id'], unique=true) }}",
        "analyze {{ this }}",
    ],
) }}

-- not materialized: each read must reach int_visits_daily's index, not a copy
with

visits_daily as not materialized (

    select * from {{ ref('int_visits_daily') }}

),

current_membership as not materialized (

    select
        customer_id,
        purchased_on
    from {{ ref('int_memberships_enriched') }}
    where is_current

),

candidates as (

    {% if is_incremental() %}

    select visits_daily.customer_id
    from visits_daily
    where visits_daily._loaded_at > {{ watermark }}

    union

    select stored.customer_id
    from {{ this }} as stored
    left join current_membership
        on stored.customer_id = current_membership.customer_id
    where stored.counted_since is distinct from current_membership.purchased_on

    {% else %}

    -- every customer; those without a visit day drop out below
    select customer_id from {{ ref('stg_club__customers') }}

    {% endif %}

),

derived as (

    select
        candidates.customer_id,
        current_membership.purchased_on as counted_since,
        latest.visit_date as last_visit_date,
        latest.visits_cumulative as visits_total,
        coalesce(before_since.visits_cumulative, 0) as visits_before_since,
        (select max(visits_daily._loaded_at) from visits_daily) as _loaded_at
    from candidates
    left join current_membership
        on candidates.customer_id = current_membership.customer_id
    left join lateral (
        select
            visits_daily.visit_date,
            visits_daily.visits_cumulative
        from visits_daily
        where visits_daily.customer_id = candidates.customer_id
        order by visits_daily.visit_date desc
        limit 1
    ) as latest on true
    left join lateral (
        select visits_daily.visits_cumulative
        from visits_daily
        where
            latest.visit_date >= current_membership.purchased_on
            and visits_daily.customer_id = candidates.customer_id
            and visits_daily.visit_date < current_membership.purchased_on
        order by visits_daily.visit_date desc
        limit 1
    ) as before_since on true

),

final as (

    select
        cast(customer_id as text) as customer_id,
        cast(counted_since as date) as counted_since,
        cast(last_visit_date as date) as last_visit_date,
        cast(visits_total as integer) as visits_total,
        cast(visits_before_since as integer) as visits_before_since,
        cast(_loaded_at as timestamptz) as _loaded_at
    from derived
    {%- if not is_incremental() %}
    -- a full build writes every row it selects (no insert_where)
    where last_visit_date is not null
    {%- endif %}

)

select * from final
