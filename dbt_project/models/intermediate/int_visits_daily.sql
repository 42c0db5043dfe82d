{#-
    Incremental. A run takes the visits (re)loaded since the last one (raw _loaded_at newer than
    the latest already processed) and, for each customer they belong to, rebuilds that
    customer's days from the earliest local date among them: a visit loaded late for an old
    day lands on its day and every later running total moves with it. When raw's check-ins in
    the visits_recheck_days before that date no longer match the running totals kept for them
    (a reload moved a visit, or a load was missed), the customer's whole history is rebuilt.
    Not filtered by the as-of date: customer_facts reads days <= D.
-#}
{%- set lookback_hours = var('visits_lookback_hours', 0) | int -%}
{%- set recheck_days = var('visits_recheck_days', 31) | int -%}

{{
    config(
        materialized='incremental',
        incremental_strategy='delete_insert_where',
        unique_key=['customer_id', 'visit_date'],
        insert_where='visits_count > 0',
        on_schema_change='fail',
        post_hook=[
            "alter table {{ this }} alter column customer_id set not null,
                alter column visit_date set not null",
            "{{ ensure_index(this, ['customer_id', 'visit_date'], unique=true,
                include=['visits_cumulative']) }}",
            "{{ ensure_index(this, ['_loaded_at']) }}",
            {"sql": "vacuum (analyze, index_cleanup off) {{ this }}", "transaction": false},
        ],
    )
}}

{#- The high-water mark, a constant for the planner (macros/high_water_mark.sql): it then
    expects a handful of new visits and looks the rest up by index. -#}
{%- set watermark = high_water_mark() %}

-- not materialized: read several times, and each read must reach raw's indexes, not a copy
with

visits as not materialized (

    select * from {{ ref('stg_club__visits') }}

),

customers as not materialized (

    select * from {{ ref('stg_club__customers') }}

),

{% if is_incremental() %}

changed_customers as (

    select
        visits.customer_id,
        min(customers.timezone) as timezone,
        min({{ local_date('visits.visited_at', 'customers.timezone') }}) as first_changed_date
    from visits
    inner join customers
        on visits.customer_id = customers.customer_id
    where visits._loaded_at > {{ watermark }} - interval '{{ lookback_hours }} hours'
    group by visits.customer_id

),

-- materialized: one row per changed customer, its lookups done once
checked_customers as materialized (

    -- the running total kept just before the first changed day, and whether the check-ins
    -- raw holds for the recheck span before that day still match the kept running totals
    select
        changed_customers.customer_id,
        changed_customers.timezone,
        changed_customers.first_changed_date,
        kept.visits_cumulative as kept_visits_cumulative,
        coalesce(kept.visits_cumulative, 0) - coalesce(kept_earlier.visits_cumulative, 0)
        = raw_recent.visits as is_consistent
    from changed_customers
    left join lateral (
        select this_days.visits_cumulative
        from {{ this }} as this_days
        where
            this_days.customer_id = changed_customers.customer_id
            and this_days.visit_date < changed_customers.first_changed_date
        order by this_days.visit_date desc
        limit 1
    ) as kept on true
    left join lateral (
        select this_days.visits_cumulative
        from {{ this }} as this_days
        where
            this_days.customer_id = changed_customers.customer_id
            and this_days.visit_date
            < changed_customers.first_changed_date - {{ recheck_days }}
        order by this_days.visit_date desc
        limit 1
    ) as kept_earlier on true
    cross join lateral (
        select count(*) as visits
        from visits as recent_visits
        where
            recent_visits.customer_id = changed_customers.customer_id
            and recent_visits.visited_at >= {{ local_day_start(
                'changed_customers.first_changed_date - ' ~ recheck_days,
                'changed_customers.timezone') }}
            and recent_visits.visited_at < {{ local_day_start(
                'changed_customers.first_changed_date', 'changed_customers.timezone') }}
    ) as raw_recent

),

rebuild_ranges as (

    select
        customer_id,
        timezone,
        case
            when is_consistent then first_changed_date
            else cast('-infinity' as date)
        end as replace_from,
        case when is_consistent then coalesce(kept_visits_cumulative, 0) else 0 end
            as total_before
    from checked_customers

),

rebuilt_days as (

    select
        rebuild_ranges.customer_id,
        {{ local_date('rebuilt.visited_at', 'rebuild_ranges.timezone') }} as visit_date,
        count(*) as visits_count,
        max(rebuilt._loaded_at) as _loaded_at
    from rebuild_ranges
    inner join visits as rebuilt
        on
            rebuild_ranges.customer_id = rebuilt.customer_id
            and rebuilt.visited_at >= {{ local_day_start(
                'rebuild_ranges.replace_from', 'rebuild_ranges.timezone') }}
    group by rebuild_ranges.customer_id, visit_date

),

kept_days as (

    -- the days of earlier runs the rebuild replaces; one left without check-ins (its visit
    -- was moved) comes out with 0 of them, which deletes it (insert_where above)
    select
        rebuild_ranges.customer_id,
        this_days.visit_date
    from rebuild_ranges
    inner join {{ this }} as this_days
        on
            rebuild_ranges.customer_id = this_days.customer_id
            and this_days.visit_date >= rebuild_ranges.replace_from

),

changed_days as (

    select
        coalesce(rebuilt_days.customer_id, kept_days.customer_id) as customer_id,
        coalesce(rebuilt_days.visit_date, kept_days.visit_date) as visit_date,
        coalesce(rebuilt_days.visits_count, 0) as visits_count,
        rebuilt_days._loaded_at
    from rebuilt_days
    full outer join kept_days
        on
            rebuilt_days.customer_id = kept_days.customer_id
            and rebuilt_days.visit_date = kept_days.visit_date

),

days as (

    select
        changed_days.*,
        rebuild_ranges.total_before
    from changed_days
    inner join rebuild_ranges
        on changed_days.customer_id = rebuild_ranges.customer_id

),

{% else %}

days as (

    select
        visits.customer_id,
        {{ local_date('visits.visited_at', 'customers.timezone') }} as visit_date,
        count(*) as visits_count,
        max(visits._loaded_at) as _loaded_at
    from visits
    inner join customers
        on visits.customer_id = customers.customer_id
    group by visits.customer_id, visit_date

),

{% endif %}

final as (

    select
        customer_id,
        visit_date,
        cast(visits_count as integer) as visits_count,
        cast({% if is_incremental() %}total_before + {% endif %}sum(visits_count) over (
            partition by customer_id
            order by visit_date
            rows between unbounded preceding and current row
        ) as integer) as visits_cumulative,
        _loaded_at
    from days

)

select * from final
