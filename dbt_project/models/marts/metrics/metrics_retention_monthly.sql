{#- Retention, churn, repeat purchases, LTV and dead contacts per calendar month and club, from
    the membership and purchase history as recorded on D (var as_of_date). Every definition is
    in _metrics__models.yml and docs/measurement.md. The month of D is measured up to D.

    Incremental: the figures of a month stored complete are kept: its member counts (S, E, N,
    retained, churned) and its purchases, revenue and first and second purchases (these two
    as the stored buyers and repeat_buyers minus the month before's). Only the other months
    (the month of D, a month stored incomplete, a club without a stored row) are counted from
    the memberships and purchases dated from the first of them on; a purchase's place in its
    customer's order (first, second) adds the customer's purchases dated before. The 12-month
    and to-date figures are recomputed from the month rows. Building an earlier D first drops
    the months after D's month (pre-hook); a full refresh counts every month. -#}

{%- set drop_later_months -%}{% raw %}
    {%- if is_incremental() -%}
        delete from {{ this }} where month > cast(date_trunc('month', {{ as_of_date() }}) as date)
    {%- endif -%}
{% endraw %}{%- endset -%}

{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key=['month'],
    on_schema_change='sync_all_columns',
    pre_hook=[drop_later_months],
) }}

with

-- The CTEs read by several parts below are `not materialized`: each part gets only the rows
-- it filters for (through the tables' customer_id indexes where it looks customers up),
-- instead of a copy of every row (at a million customers, 2.3M memberships, 2.9M purchases
-- and customer_facts were copied and hashed for the few thousand rows a month needs).
customer_facts as not materialized (

    select customer_id, club_id, as_of_date, sms_contactable, email_contactable
    from {{ ref('customer_facts') }}

),

memberships as (

    select * from {{ ref('stg_club__memberships') }}

),

purchases as not materialized (

    select * from {{ ref('int_purchases_classified') }}

),

{% if is_incremental() %}

stored as (

    select * from {{ this }}

),

{% else %}

stored as (

    select
        cast(null as date) as month,
        cast(null as text) as club_id,
        cast(null as boolean) as is_complete,
        cast(null as integer) as customers_start,
        cast(null as integer) as customers_end,
        cast(null as integer) as new_customers,
        cast(null as integer) as retained_customers,
        cast(null as integer) as churned_customers,
        cast(null as integer) as buyers,
        cast(null as integer) as repeat_buyers,
        cast(null as integer) as purchases,
        cast(null as numeric(16, 2)) as revenue
    where false

),

{% endif %}

as_of as (

    select {{ as_of_date() }} as as_of_date

),

-- the customers existing on D and their club (customer_facts is a table: cheaper than staging)
customers as not materialized (

    select
        customer_id,
        club_id
    from customer_facts

),

-- memberships that count: not cancelled, bought by D
kept_memberships as not materialized (

    select
        memberships.customer_id,
        customers.club_id,
        memberships.purchased_on,
        memberships.starts_on,
        memberships.ends_on,
        memberships.price
    from memberships
    inner join customers
        on memberships.customer_id = customers.customer_id
    cross join as_of
    where
        not memberships.is_cancelled
        and memberships.purchased_on <= as_of.as_of_date

),

-- every purchase up to D: kept memberships on their purchase day, and service purchases;
-- not materialized: each reader below filters it by date, and gets only those rows
all_purchases as not materialized (

    select
        customer_id,
        club_id,
        purchased_on as purchase_date,
        price as amount
    from kept_memberships

    union all

    select
        purchases.customer_id,
        customers.club_id,
        purchases.purchase_date,
        purchases.amount
    from purchases
    inner join customers
        on purchases.customer_id = customers.customer_id
    cross join as_of
    where purchases.purchase_date <= as_of.as_of_date

),

months as (

    select
        cast(month_start as date) as month,
        cast(least(month_start + interval '1 month' - interval '1 day', as_of.as_of_date) as date)
            as period_end,
        month_start + interval '1 month' - interval '1 day' <= as_of.as_of_date as is_complete
    from as_of
    cross join generate_series(
        -- from the first stored month; only without one, the first purchase's (all of them read)
        coalesce(
            (select date_trunc('month', min(stored.month)) from stored),
            (select date_trunc('month', min(purchase_date)) from all_purchases)
        ),
        date_trunc('month', (select as_of_date from as_of)),
        interval '1 month'
    ) as month_start

),

clubs as (

    select distinct club_id from customers

),

-- figures kept from the stored table: months complete then and complete as of D; a month's
-- first and second purchases are its cumulative buyers and repeat buyers minus the month
-- before's (every month since the first is stored, per club)
stored_counts as (

    select
        stored.month,
        stored.club_id,
        stored.customers_start,
        stored.customers_end,
        stored.new_customers,
        stored.retained_customers,
        stored.churned_customers,
        stored.first_purchases,
        stored.second_purchases,
        stored.purchases,
        stored.revenue
    from (
        select
            *,
            buyers - coalesce(lag(buyers) over by_club, 0) as first_purchases,
            repeat_buyers - coalesce(lag(repeat_buyers) over by_club, 0) as second_purchases
        from stored
        window by_club as (partition by club_id order by month)
    ) as stored
    inner join months
        on stored.month = months.month
    where
        stored.is_complete
        and months.is_complete

),

-- the months and clubs whose members are counted from the memberships in this build
months_to_count as (

    select
        months.month,
        months.period_end,
        clubs.club_id
    from months
    cross join clubs
    where not exists (
        select 1 from stored_counts
        where
            stored_counts.month = months.month
            and stored_counts.club_id = clubs.club_id
    )

),

-- per customer and month: a membership held when the month opens (S: on the day before its
-- first day, so S is the month before's E) / on the period end (E)
member_months as (

    select
        kept_memberships.customer_id,
        kept_memberships.club_id,
        months_to_count.month,
        months_to_count.period_end,
        bool_or(
            kept_memberships.starts_on <= months_to_count.month - 1
            and kept_memberships.ends_on >= months_to_count.month - 1
        ) as at_start,
        bool_or(
            kept_memberships.starts_on <= months_to_count.period_end
            and kept_memberships.ends_on >= months_to_count.period_end
        ) as at_end
    from kept_memberships
    inner join months_to_count
        on
            kept_memberships.club_id = months_to_count.club_id
            and kept_memberships.starts_on <= months_to_count.period_end
            and kept_memberships.ends_on >= months_to_count.month - 1
    -- the same bound as a constant, so that only memberships ending on or after the day
    -- before the first month counted are read (an incremental build: a tenth of them)
    where kept_memberships.ends_on >= (select min(month) - 1 from months_to_count)
    group by 1, 2, 3, 4

),

-- in S, not in E, and no membership bought by the period end that starts after it
churned as (

    select
        member_months.month,
        member_months.club_id,
        count(*) as churned_customers
    from member_months
    where
        member_months.at_start
        and not member_months.at_end
        and not exists (
            select 1 from kept_memberships as renewal
            where
                renewal.customer_id = member_months.customer_id
                and renewal.purchased_on <= member_months.period_end
                and renewal.starts_on > member_months.period_end
                -- implied (a period ends in or after the first month counted), as a constant:
                -- only memberships starting from then on are read
                and renewal.starts_on >= (select min(month) from months_to_count)
        )
    group by 1, 2

),

-- N: customers in E who were not in S (new, or back after a gap), so E - N = retained
held as (

    select
        month,
        club_id,
        count(*) filter (where at_start) as customers_start,
        count(*) filter (where at_end) as customers_end,
        count(*) filter (where at_end and not at_start) as new_customers,
        count(*) filter (where at_start and at_end) as retained_customers
    from member_months
    group by 1, 2

),

-- purchases are counted from the first month counted on; the months before are stored
count_from as (

    select min(month) as month from months_to_count

),

counted_purchases as materialized (

    select all_purchases.*
    from all_purchases
    where all_purchases.purchase_date >= (select month from count_from)

),

-- of the customers buying then, how many purchases each made before: looked up per customer
-- (a month's buyers are a few thousand of a million). A build that counts from the first month
-- (a full refresh, or nothing stored) finds none before it.
{% if is_incremental() %}

earlier_purchases as (

    select
        buyer.customer_id,
        memberships_before.n + purchases_before.n as purchases_before
    from (select distinct counted_purchases.customer_id from counted_purchases) as buyer
    cross join lateral (
        select count(*) as n
        from kept_memberships
        where
            kept_memberships.customer_id = buyer.customer_id
            and kept_memberships.purchased_on < (select month from count_from)
    ) as memberships_before
    cross join lateral (
        select count(*) as n
        from purchases
        where
            purchases.customer_id = buyer.customer_id
            and purchases.purchase_date < (select month from count_from)
    ) as purchases_before

),

{% else %}

earlier_purchases as (

    select
        cast(null as text) as customer_id,
        cast(0 as bigint) as purchases_before
    where false

),

{% endif %}

-- each customer's first and second purchase, for the repeat purchase rate
purchase_order as (

    select
        counted_purchases.club_id,
        counted_purchases.purchase_date,
        coalesce(earlier_purchases.purchases_before, 0) + row_number() over (
            partition by counted_purchases.customer_id order by counted_purchases.purchase_date
        ) as purchase_number
    from counted_purchases
    left join earlier_purchases
        on counted_purchases.customer_id = earlier_purchases.customer_id

),

buyers_by_month as (

    select
        club_id,
        cast(date_trunc('month', purchase_date) as date) as month,
        count(*) filter (where purchase_number = 1) as first_purchases,
        count(*) filter (where purchase_number = 2) as second_purchases
    from purchase_order
    where purchase_number <= 2
    group by 1, 2

),

purchases_by_month as (

    select
        club_id,
        cast(date_trunc('month', purchase_date) as date) as month,
        count(*) as purchases,
        sum(amount) as revenue
    from counted_purchases
    group by 1, 2

),

dead_contacts as (

    select
        club_id,
        cast(date_trunc('month', as_of_date) as date) as month,
        count(*) as customers_on_as_of,
        count(*) filter (where not sms_contactable and not email_contactable) as dead_contacts
    from customer_facts
    group by 1, 2

),

counts as (

    select
        months.month,
        clubs.club_id,
        months.period_end,
        months.is_complete,
        months.period_end - months.month + 1 as days_measured,
        coalesce(stored_counts.customers_start, held.customers_start, 0) as customers_start,
        coalesce(stored_counts.customers_end, held.customers_end, 0) as customers_end,
        coalesce(stored_counts.new_customers, held.new_customers, 0) as new_customers,
        coalesce(stored_counts.retained_customers, held.retained_customers, 0)
            as retained_customers,
        coalesce(stored_counts.churned_customers, churned.churned_customers, 0)
            as churned_customers,
        coalesce(stored_counts.first_purchases, buyers_by_month.first_purchases, 0)
            as first_purchases,
        coalesce(stored_counts.second_purchases, buyers_by_month.second_purchases, 0)
            as second_purchases,
        coalesce(stored_counts.purchases, purchases_by_month.purchases, 0) as purchases,
        coalesce(stored_counts.revenue, purchases_by_month.revenue, 0) as revenue,
        dead_contacts.customers_on_as_of,
        dead_contacts.dead_contacts
    from months
    cross join clubs
    left join stored_counts
        on months.month = stored_counts.month and clubs.club_id = stored_counts.club_id
    left join held
        on months.month = held.month and clubs.club_id = held.club_id
    left join churned
        on months.month = churned.month and clubs.club_id = churned.club_id
    left join buyers_by_month
        on months.month = buyers_by_month.month and clubs.club_id = buyers_by_month.club_id
    left join purchases_by_month
        on
            months.month = purchases_by_month.month
            and clubs.club_id = purchases_by_month.club_id
    left join dead_contacts
        on months.month = dead_contacts.month and clubs.club_id = dead_contacts.club_id

),

windowed as (

    select
        *,
        sum(first_purchases) over to_date as buyers,
        sum(second_purchases) over to_date as repeat_buyers,
        sum(revenue) over to_date as revenue_to_date,
        sum(purchases) over last_12 as purchases_12m,
        sum(revenue) over last_12 as revenue_12m,
        sum(churned_customers) over last_12 as churned_12m,
        -- members in a month: the mean of S and E
        avg((customers_start + customers_end) / 2.0) over last_12 as avg_members_12m,
        sum(days_measured) over last_12 as days_12m
    from counts
    window
        to_date as (partition by club_id order by month rows unbounded preceding),
        last_12 as (partition by club_id order by month rows 11 preceding)

),

rates as (

    select
        *,
        revenue_12m / nullif(purchases_12m, 0) as avg_purchase_value,
        purchases_12m / nullif(avg_members_12m, 0) * 365.25 / days_12m as purchases_per_year,
        churned_12m / nullif(avg_members_12m, 0) * 365.25 / days_12m as annual_churn_rate
    from windowed

),

final as (

    select
        cast(month as date) as month,
        cast(club_id as text) as club_id,
        cast(period_end as date) as period_end,
        cast(is_complete as boolean) as is_complete,
        cast(customers_start as integer) as customers_start,
        cast(customers_end as integer) as customers_end,
        cast(new_customers as integer) as new_customers,
        cast(retained_customers as integer) as retained_customers,
        cast(round((customers_end - new_customers) / nullif(customers_start, 0.0), 4)
            as numeric(8, 4)) as crr,
        cast(churned_customers as integer) as churned_customers,
        cast(round(churned_customers / nullif(customers_start, 0.0), 4) as numeric(8, 4))
            as churn_rate,
        cast(buyers as integer) as buyers,
        cast(repeat_buyers as integer) as repeat_buyers,
        cast(round(repeat_buyers / nullif(buyers, 0.0), 4) as numeric(8, 4))
            as repeat_purchase_rate,
        cast(purchases as integer) as purchases,
        cast(revenue as numeric(16, 2)) as revenue,
        cast(revenue_to_date as numeric(16, 2)) as revenue_to_date,
        cast(round(revenue_to_date / nullif(buyers, 0), 2) as numeric(14, 2))
            as realised_revenue_per_customer,
        cast(round(avg_purchase_value, 2) as numeric(14, 2)) as avg_purchase_value,
        cast(round(purchases_per_year, 4) as numeric(10, 4)) as purchases_per_year,
        cast(round(annual_churn_rate, 4) as numeric(10, 4)) as annual_churn_rate,
        -- the expected lifespan of a member: 1 / annual churn
        cast(round(1 / nullif(annual_churn_rate, 0), 4) as numeric(10, 4))
            as avg_retention_years,
        cast(round(avg_purchase_value * purchases_per_year / nullif(annual_churn_rate, 0), 2)
            as numeric(14, 2)) as ltv,
        cast(customers_on_as_of as integer) as customers_on_as_of,
        cast(dead_contacts as integer) as dead_contacts,
        cast(round(dead_contacts / nullif(customers_on_as_of, 0.0), 4) as numeric(8, 4))
            as dead_contacts_share
    from rates

)

select * from final
