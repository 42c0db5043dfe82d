{%- set default_consent = var('default_consent') | string | lower | trim
    in ['true', 't', '1', 'yes', 'y', 'on'] -%}

{#- The index is unnamed so PostgreSQL picks a free name: the copy dbt swaps out still holds
    the previous one until the end of the run. -#}
{{ config(post_hook=["create unique index on {{ this }} (customer_id)"]) }}

with

customers as (

    select * from {{ ref('stg_club__customers') }}

),

consents as (

    select * from {{ ref('stg_club__consents') }}

),

memberships as (

    select * from {{ ref('int_memberships_enriched') }}

),

visits_daily as (

    select * from {{ ref('int_visits_daily') }}

),

purchases as (

    select * from {{ ref('int_purchases_classified') }}

),

as_of as (

    select {{ as_of_date() }} as as_of_date

),

customers_on_as_of as (

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

current_membership as (

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

visit_totals as (

    select
        customers_on_as_of.customer_id,
        sum(visits_daily.visits_count) as visits_total,
        sum(visits_daily.visits_count) filter (
            where visits_daily.visit_date >= current_membership.purchased_on
        ) as visits_since_purchase,
        sum(visits_daily.visits_count) filter (
            where visits_daily.visit_date >= customers_on_as_of.as_of_date - 6
        ) as visits_last_7d,
        sum(visits_daily.visits_count) filter (
            where visits_daily.visit_date >= customers_on_as_of.as_of_date - 29
        ) as visits_last_30d,
        sum(visits_daily.visits_count) filter (
            where visits_daily.visit_date >= customers_on_as_of.as_of_date - 89
        ) as visits_last_90d,
        max(visits_daily.visit_date) as last_visit_date
    from customers_on_as_of
    inner join visits_daily
        on
            customers_on_as_of.customer_id = visits_daily.customer_id
            and visits_daily.visit_date <= customers_on_as_of.as_of_date
    left join current_membership
        on customers_on_as_of.customer_id = current_membership.customer_id
    group by customers_on_as_of.customer_id

),

purchase_totals as (

    select
        customers_on_as_of.customer_id,
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
                and purchases.purchase_date >= customers_on_as_of.as_of_date - 29
        ) as addon_purchases_last_30d,
        count(*) filter (
            where
                purchases.category = 'cross_sell'
                and purchases.purchase_date >= customers_on_as_of.as_of_date - 89
        ) as cross_sell_purchases_last_90d,
        sum(purchases.amount) as purchase_revenue
    from customers_on_as_of
    inner join purchases
        on
            customers_on_as_of.customer_id = purchases.customer_id
            and purchases.purchase_date <= customers_on_as_of.as_of_date
    left join current_membership
        on customers_on_as_of.customer_id = current_membership.customer_id
    group by customers_on_as_of.customer_id

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
        purchase_totals.purchase_revenue
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
            as lifetime_revenue
    from joined

)

select * from final
