{#-
    Each customer's usual local visit time on D, from their check-ins of the last N weeks
    (policy.send_time.lookback_weeks, var lifecycle_phases): a median on a clock rotated so
    that its cut lies opposite the visits' circular mean, so visits at 23:30 and 00:30 average
    to midnight, not to noon, and a few odd visits do not move it. The planner sends a
    message lead_minutes before it (policy.send_time mode habit) when visits_counted is at
    least min_visits.
-#}
{%- set weeks = lifecycle_setting('send_time', 'lookback_weeks') | int -%}

{{ config(post_hook=[
    "create unique index on {{ this }} (customer_id)",
    "analyze {{ this }}",
]) }}

with

as_of as (

    select {{ as_of_date() }} as as_of_date

),

customers as (

    -- only those with a check-in in the lookback can have a row: customer_facts' latest visit
    -- day <= D (the same local dates) falls in it. The customers customer_facts does not hold
    -- (customer_since after D) are looked up as before. At a million customers most have not
    -- visited for weeks: each lookup skipped is an index descent into raw.visits saved.
    select
        customers.customer_id,
        customers.timezone
    from {{ ref('stg_club__customers') }} as customers
    left join {{ ref('customer_facts') }} as facts
        on customers.customer_id = facts.customer_id
    where
        facts.customer_id is null
        or facts.last_visit_date >= {{ as_of_date() }} - {{ weeks * 7 - 1 }}

),

visits as (

    -- local minute of the day of each check-in in [D - 7N + 1, D] (local dates), looked up
    -- per customer in raw.visits' (customer_id, visited_at) index (an index-only range scan
    -- between constant bounds, a day wider than any zone), not by scanning every visit ever
    -- made: no index leads with visited_at, and the lookback is ~1% of seven years
    select
        customers.customer_id,
        (
            extract(hour from recent.local_at) * 60 + extract(minute from recent.local_at)
        )::integer as minute_of_day
    from customers
    cross join as_of
    cross join lateral (
        select visits.visited_at at time zone customers.timezone as local_at
        from {{ ref('stg_club__visits') }} as visits
        where
            visits.customer_id = customers.customer_id
            and visits.visited_at >= cast(as_of.as_of_date - {{ weeks * 7 }} as timestamptz)
            and visits.visited_at < cast(as_of.as_of_date + 2 as timestamptz)
        -- keeps the lookup per customer: without it the planner flattens the subquery into
        -- a join that reads the whole index (at 1M customers 38-40 s against 16-20 s)
        offset 0
    ) as recent
    where
        cast(recent.local_at as date)
        between as_of.as_of_date - {{ weeks * 7 - 1 }} and as_of.as_of_date

),

circular as (

    -- the mean direction on a 24-hour circle (1440 minutes = 2 pi) and its strength
    select
        customer_id,
        count(*) as visits_counted,
        avg(sin(2 * pi() * minute_of_day / 1440)) as mean_sin,
        avg(cos(2 * pi() * minute_of_day / 1440)) as mean_cos
    from visits
    group by customer_id

),

cuts as (

    -- the clock is cut opposite the mean: the minute 12 hours away from it
    select
        customer_id,
        visits_counted,
        sqrt(mean_sin * mean_sin + mean_cos * mean_cos) as concentration,
        mod(
            cast(round(atan2(mean_sin, mean_cos) * 1440 / (2 * pi())) as integer) + 720 + 1440,
            1440
        ) as cut_minute
    from circular

),

rotated as (

    select
        cuts.customer_id,
        percentile_cont(0.5) within group (
            order by mod(visits.minute_of_day - cuts.cut_minute + 1440, 1440)
        ) as median_rotated
    from visits
    inner join cuts
        on visits.customer_id = cuts.customer_id
    group by cuts.customer_id

),

final as (

    select
        cast(cuts.customer_id as text) as customer_id,
        cast(as_of.as_of_date as date) as as_of_date,
        cast(
            mod(cast(floor(rotated.median_rotated) as integer) + cuts.cut_minute, 1440)
            as integer
        ) as usual_visit_minute,
        cast(
            div(mod(cast(floor(rotated.median_rotated) as integer) + cuts.cut_minute, 1440), 60)
            as integer
        ) as usual_visit_hour,
        cast(cuts.visits_counted as integer) as visits_counted,
        cast(round(cast(cuts.concentration as numeric), 3) as numeric(4, 3)) as concentration
    from cuts
    inner join rotated
        on cuts.customer_id = rotated.customer_id
    cross join as_of

)

select * from final
