{%- set default_consent = var('default_consent') | string | lower | trim
    in ['true', 't', '1', 'yes', 'y', 'on'] -%}

{#- Indexes: the key, and the day counts phase conditions filter on by range. Unnamed so
    PostgreSQL picks free names: the copy dbt swaps out holds the old ones until the run ends. -#}
{{ config(post_hook=[
    "{{ set_not_null_columns() }}",
    "create unique index on {{ this }} (customer_id)",
    "create index on {{ this }} (days_since_purchase)",
    "create index on {{ this }} (days_until_end)",
    "create index on {{ this }} (days_since_end)",
    "analyze {{ this }}",
]) }}

{#- int_visits_customer's high-water mark, read before the run so the planner sees a constant
    (and expects the handful of rows the _loaded_at index finds); a subquery in unit tests. -#}
{%- set summarized_through = "(select max(_loaded_at) from " ~ ref('int_visits_customer') ~ ")" -%}
{%- if execute and model.resource_type != 'unit_test' -%}
    {%- do as_of_date() -%}  {#- its checks of var as_of_date come first -#}
    {%- set latest = run_query(
        'select max(_loaded_at) from ' ~ ref('int_visits_customer')
    ).columns[0][0] -%}
    {%- set summarized_through = "cast('infinity' as timestamptz)" if latest is none
        else "cast('" ~ latest ~ "' as timestamptz)" -%}
{%- endif %}

{#- CTEs read more than once are `not materialized`: PostgreSQL would otherwise compute each
    once into a copy without indexes or statistics, which rules out parallel scans, the index
    lookups into int_visits_daily and sensible join plans at a million customers. -#}

with

customers as (

    select * from {{ ref('stg_club__customers') }}

),

consents as (

    select * from {{ ref('stg_club__consents') }}

),

memberships as not materialized (

    select * from {{ ref('int_memberships_enriched') }}

),

visits_daily as not materialized (

    select * from {{ ref('int_visits_daily') }}

),

-- customers with days int_visits_daily wrote after the latest build of int_visits_customer
-- (a build that selected one and not the other): their held rows are not used, they are
-- looked up (the _loaded_at index finds none when both are current)
unsummarized as materialized (

    select distinct visits_daily.customer_id
    from visits_daily
    where visits_daily._loaded_at > {{ summarized_through }}

),

visits_customer as (

    select held.*
    from {{ ref('int_visits_customer') }} as held
    left join unsummarized
        on held.customer_id = unsummarized.customer_id
    where unsummarized.customer_id is null

),

purchases as (

    select * from {{ ref('int_purchases_classified') }}

),

rfm as (

    select * from {{ ref('int_customer_rfm') }}

),

as_of as not materialized (

    select {{ as_of_date() }} as as_of_date

),

customers_on_as_of as not materialized (

    select
        customers.*,
        as_of.as_of_date
    from customers
    cross join as_of
    where customers.customer_since <= as_of.as_of_date

),

consent_by_channel as (

    select
        customer_id,
        bool_or(opted_in) filter (where channel = 'sms') as sms_opted_in,
        bool_or(opted_in) filter (where channel = 'email') as email_opted_in
    from consents
    group by customer_id

),

current_membership as not materialized (

    select * from memberships
    where is_current

),

membership_totals as (

    select
        customer_id,
        count(*) as memberships_total,
        bool_or(is_active_on_as_of) as has_active_membership,
        sum(price) filter (where not is_cancelled) as membership_revenue
    from memberships
    group by customer_id

),

last_visit as (

    -- int_visits_customer holds each customer's latest visit day and the running total
    -- before the current membership's purchase: one join. Only where its row does not apply
    -- on D (a later visit day held, another purchase date counted from, or no row) are they
    -- looked up in int_visits_daily, whose running totals make each count one index lookup:
    -- the total on the last visit day <= D minus the total before the window starts.
    select
        customers_on_as_of.customer_id,
        customers_on_as_of.as_of_date,
        current_membership.purchased_on,
        coalesce(
            case when visits_customer.last_visit_date <= customers_on_as_of.as_of_date
                then visits_customer.last_visit_date end,
            last_day.visit_date
        ) as last_visit_date,
        coalesce(
            case when visits_customer.last_visit_date <= customers_on_as_of.as_of_date
                then visits_customer.visits_total end,
            last_day.visits_cumulative
        ) as visits_total,
        case
            when visits_customer.counted_since = current_membership.purchased_on
                then visits_customer.visits_before_since
        end as visits_before_purchase
    from customers_on_as_of
    left join current_membership
        on customers_on_as_of.customer_id = current_membership.customer_id
    left join visits_customer
        on customers_on_as_of.customer_id = visits_customer.customer_id
    left join lateral (
        select
            visits_daily.visit_date,
            visits_daily.visits_cumulative
        from visits_daily
        where
            -- a one-time filter: no lookup where the held row applies
            coalesce(visits_customer.last_visit_date > customers_on_as_of.as_of_date, true)
            and visits_daily.customer_id = customers_on_as_of.customer_id
            and visits_daily.visit_date <= customers_on_as_of.as_of_date
        order by visits_daily.visit_date desc
        limit 1
    ) as last_day on true

),

visit_totals as (

    -- since the purchase: the total minus the running total before it (held, else one
    -- lookup); the 7/30/90-day windows: one index range scan over the customer's days in
    -- [D-89, D], only when the last visit falls inside it (else every count is 0)
    select
        last_visit.customer_id,
        last_visit.visits_total,
        last_visit.last_visit_date,
        case
            when last_visit.last_visit_date >= last_visit.purchased_on
                then last_visit.visits_total - coalesce(
                    last_visit.visits_before_purchase, before_purchase.visits_cumulative, 0
                )
            else 0
        end as visits_since_purchase,
        coalesce(windows.visits_last_7d, 0) as visits_last_7d,
        coalesce(windows.visits_last_30d, 0) as visits_last_30d,
        coalesce(windows.visits_last_90d, 0) as visits_last_90d
    from last_visit
    left join lateral (
        select visits_daily.visits_cumulative
        from visits_daily
        where
            last_visit.last_visit_date >= last_visit.purchased_on
            and last_visit.visits_before_purchase is null
            and visits_daily.customer_id = last_visit.customer_id
            and visits_daily.visit_date < last_visit.purchased_on
        order by visits_daily.visit_date desc
        limit 1
    ) as before_purchase on true
    left join lateral (
        select
            sum(visits_daily.visits_count) filter (
                where visits_daily.visit_date >= last_visit.as_of_date - 6
            ) as visits_last_7d,
            sum(visits_daily.visits_count) filter (
                where visits_daily.visit_date >= last_visit.as_of_date - 29
            ) as visits_last_30d,
            sum(visits_daily.visits_count) as visits_last_90d
        from visits_daily
        where
            last_visit.last_visit_date >= last_visit.as_of_date - 89
            and visits_daily.customer_id = last_visit.customer_id
            and visits_daily.visit_date >= last_visit.as_of_date - 89
            and visits_daily.visit_date <= last_visit.as_of_date
    ) as windows on true

),

purchase_totals as (

    -- purchases of customers who do not exist on D drop out in the join below
    select
        purchases.customer_id,
        count(*) filter (
            where
                purchases.category = 'addon'
                and purchases.purchase_date >= current_membership.purchased_on
        ) as addon_purchases_since_purchase,
        count(*) filter (
            where
                purchases.category = 'cross_sell'
                and purchases.purchase_date >= current_membership.purchased_on
        ) as cross_sell_purchases_since_purchase,
        count(*) filter (
            where
                purchases.category = 'addon'
                and purchases.purchase_date >= as_of.as_of_date - 29
        ) as addon_purchases_last_30d,
        count(*) filter (
            where
                purchases.category = 'addon'
                and purchases.purchase_date >= as_of.as_of_date - 89
        ) as addon_purchases_last_90d,
        count(*) filter (
            where
                purchases.category = 'cross_sell'
                and purchases.purchase_date >= as_of.as_of_date - 29
        ) as cross_sell_purchases_last_30d,
        count(*) filter (
            where
                purchases.category = 'cross_sell'
                and purchases.purchase_date >= as_of.as_of_date - 89
        ) as cross_sell_purchases_last_90d,
        max(purchases.purchase_date) filter (where purchases.category = 'addon')
            as last_addon_purchase_on,
        max(purchases.purchase_date) filter (where purchases.category = 'cross_sell')
            as last_cross_sell_purchase_on,
        sum(purchases.amount) as purchase_revenue
    from purchases
    cross join as_of
    left join current_membership
        on purchases.customer_id = current_membership.customer_id
    where purchases.purchase_date <= as_of.as_of_date
    group by purchases.customer_id

),

joined as (

    select
        customers_on_as_of.customer_id,
        customers_on_as_of.club_id,
        customers_on_as_of.first_name,
        customers_on_as_of.email,
        customers_on_as_of.phone,
        customers_on_as_of.email_valid,
        customers_on_as_of.phone_valid,
        coalesce(consent_by_channel.sms_opted_in, {{ default_consent }}) as sms_consent,
        coalesce(consent_by_channel.email_opted_in, {{ default_consent }}) as email_consent,
        customers_on_as_of.timezone,
        customers_on_as_of.as_of_date,
        customers_on_as_of.customer_since,
        current_membership.membership_id,
        current_membership.product,
        current_membership.purchased_on,
        current_membership.starts_on,
        current_membership.ends_on,
        current_membership.membership_status,
        current_membership.has_renewal,
        current_membership.renewal_membership_id,
        current_membership.gap_days_before as gap_days_before_current,
        membership_totals.memberships_total,
        membership_totals.has_active_membership,
        membership_totals.membership_revenue,
        visit_totals.visits_total,
        visit_totals.visits_since_purchase,
        visit_totals.visits_last_7d,
        visit_totals.visits_last_30d,
        visit_totals.visits_last_90d,
        visit_totals.last_visit_date,
        purchase_totals.addon_purchases_since_purchase,
        purchase_totals.cross_sell_purchases_since_purchase,
        purchase_totals.addon_purchases_last_30d,
        purchase_totals.cross_sell_purchases_last_90d,
        purchase_totals.addon_purchases_last_90d,
        purchase_totals.cross_sell_purchases_last_30d,
        purchase_totals.last_addon_purchase_on,
        purchase_totals.last_cross_sell_purchase_on,
        purchase_totals.purchase_revenue,
        rfm.lifetime_purchases,
        rfm.rfm_recency_days,
        rfm.rfm_frequency,
        rfm.rfm_monetary,
        rfm.r_score,
        rfm.f_score,
        rfm.m_score
    from customers_on_as_of
    left join consent_by_channel
        on customers_on_as_of.customer_id = consent_by_channel.customer_id
    left join current_membership
        on customers_on_as_of.customer_id = current_membership.customer_id
    left join membership_totals
        on customers_on_as_of.customer_id = membership_totals.customer_id
    left join visit_totals
        on customers_on_as_of.customer_id = visit_totals.customer_id
    left join purchase_totals
        on customers_on_as_of.customer_id = purchase_totals.customer_id
    left join rfm
        on customers_on_as_of.customer_id = rfm.customer_id

),

final as (

    select
        cast(customer_id as text) as customer_id,
        cast(club_id as text) as club_id,
        cast(first_name as text) as first_name,
        cast(email as text) as email,
        cast(phone as text) as phone,
        cast(email_valid as boolean) as email_valid,
        cast(phone_valid as boolean) as phone_valid,
        cast(sms_consent as boolean) as sms_consent,
        cast(email_consent as boolean) as email_consent,
        cast(phone_valid and sms_consent as boolean) as sms_contactable,
        cast(email_valid and email_consent as boolean) as email_contactable,
        cast(timezone as text) as timezone,
        cast(as_of_date as date) as as_of_date,
        cast(customer_since as date) as customer_since,
        cast(as_of_date - customer_since as integer) as tenure_days,
        cast(membership_id as text) as membership_id,
        cast(product as text) as product,
        cast(purchased_on as date) as purchased_on,
        cast(starts_on as date) as starts_on,
        cast(ends_on as date) as ends_on,
        cast(membership_status as text) as membership_status,
        cast(coalesce(has_active_membership, false) as boolean) as has_active_membership,
        cast(as_of_date - purchased_on as integer) as days_since_purchase,
        cast(ends_on - as_of_date as integer) as days_until_end,
        cast(case when ends_on < as_of_date then as_of_date - ends_on end as integer)
            as days_since_end,
        cast(coalesce(has_renewal, false) as boolean) as has_renewal,
        cast(coalesce(memberships_total, 0) as integer) as memberships_total,
        cast(coalesce(visits_total, 0) as integer) as visits_total,
        cast(coalesce(visits_since_purchase, 0) as integer) as visits_since_purchase,
        cast(coalesce(visits_last_7d, 0) as integer) as visits_last_7d,
        cast(coalesce(visits_last_30d, 0) as integer) as visits_last_30d,
        cast(coalesce(visits_last_90d, 0) as integer) as visits_last_90d,
        cast(last_visit_date as date) as last_visit_date,
        cast(coalesce(addon_purchases_since_purchase, 0) as integer)
            as addon_purchases_since_purchase,
        cast(coalesce(cross_sell_purchases_since_purchase, 0) as integer)
            as cross_sell_purchases_since_purchase,
        cast(coalesce(addon_purchases_last_30d, 0) as integer) as addon_purchases_last_30d,
        cast(coalesce(cross_sell_purchases_last_90d, 0) as integer)
            as cross_sell_purchases_last_90d,
        cast(coalesce(membership_revenue, 0) + coalesce(purchase_revenue, 0) as numeric(14, 2))
            as lifetime_revenue,
        cast(renewal_membership_id as text) as renewal_membership_id,
        cast(gap_days_before_current as integer) as gap_days_before_current,
        cast(as_of_date - last_visit_date as integer) as days_since_last_visit,
        cast(coalesce(addon_purchases_last_90d, 0) as integer) as addon_purchases_last_90d,
        cast(coalesce(cross_sell_purchases_last_30d, 0) as integer)
            as cross_sell_purchases_last_30d,
        cast(last_addon_purchase_on as date) as last_addon_purchase_on,
        cast(last_cross_sell_purchase_on as date) as last_cross_sell_purchase_on,
        cast(coalesce(lifetime_purchases, 0) as integer) as lifetime_purchases,
        cast(rfm_recency_days as integer) as rfm_recency_days,
        cast(coalesce(rfm_frequency, 0) as integer) as rfm_frequency,
        cast(coalesce(rfm_monetary, 0) as numeric(14, 2)) as rfm_monetary,
        cast(r_score as integer) as r_score,
        cast(f_score as integer) as f_score,
        cast(m_score as integer) as m_score,
        cast({{ rfm_segment(
            'r_score', 'f_score', 'lifetime_purchases',
            '(phone_valid and sms_consent) or (email_valid and email_consent)'
        ) }} as text) as rfm_segment
    from joined

)

select * from final
