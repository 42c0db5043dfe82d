{#- Customer-days eligible per phase step, per calendar month and club, from the spells of
    customer_lifecycle_history: only the days that were built count. Incremental by month:
    building D can only change days >= D, so the months from D's month to the last one held
    are recomputed (delete + insert by month); a full refresh recomputes every month. -#}
{%- set phase_config = lifecycle_phases() -%}

{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key=['month'],
    on_schema_change='sync_all_columns',
) }}

with

history as (

    select * from {{ ref('customer_lifecycle_history') }}

),

-- the club of each customer (customer_facts is a table: cheaper than staging)
customers as (

    select
        customer_id,
        club_id
    from {{ ref('customer_facts') }}

),

bounds as (

    select
        {% if is_incremental() -%}
        cast(date_trunc('month', {{ as_of_date() }}) as date) as first_month,
        cast(greatest(
            date_trunc('month', (select max(valid_to) from history)),
            (select max(month) from {{ this }})
        ) as date) as last_month
        {%- else -%}
        cast(date_trunc('month', (select min(valid_from) from history)) as date) as first_month,
        cast(date_trunc('month', (select max(valid_to) from history)) as date) as last_month
        {%- endif %}

),

months as (

    select
        cast(month_start as date) as month,
        cast(month_start + interval '1 month' - interval '1 day' as date) as month_end
    from bounds
    cross join generate_series(
        bounds.first_month, bounds.last_month, interval '1 month'
    ) as month_start

),

-- spells with the days they spend in each month
spell_months as (

    select
        history.customer_id,
        customers.club_id,
        history.eligible_phases,
        months.month,
        least(history.valid_to, months.month_end)
        - greatest(history.valid_from, months.month) + 1 as days
    from history
    inner join months
        on
            history.valid_from <= months.month_end
            and history.valid_to >= months.month
    inner join customers
        on history.customer_id = customers.customer_id

),

customer_days as (

    select
        month,
        club_id,
        sum(days) as customer_days
    from spell_months
    group by 1, 2

),

-- the built days: every customer has a spell on each of them
built_days as (

    select
        months.month,
        count(distinct built.day) as days_built
    from months
    inner join (
        select distinct spans.valid_from, spans.valid_to
        from history as spans
        where spans.valid_to >= (select first_month from bounds)
    ) as spans
        on spans.valid_from <= months.month_end and spans.valid_to >= months.month
    cross join lateral generate_series(
        greatest(spans.valid_from, months.month),
        least(spans.valid_to, months.month_end),
        interval '1 day'
    ) as built (day)
    group by 1

),

eligible as (

    select
        spell_months.month,
        spell_months.club_id,
        split_part(phase_step, ':', 1) as phase,
        cast(split_part(phase_step, ':', 2) as integer) as step,
        sum(spell_months.days) as eligible_customer_days,
        count(distinct spell_months.customer_id) as eligible_customers
    from spell_months
    cross join lateral unnest(string_to_array(spell_months.eligible_phases, ',')) as phase_step
    where spell_months.eligible_phases <> ''
    group by 1, 2, 3, 4

),

-- every phase step of the rules in use, plus any still found in the history
phase_steps as (

    {% for phase in phase_config['phases'] -%}
    {%- for step in phase['steps'] -%}
    select
        '{{ phase["name"] | replace("'", "") }}' as phase,
        {{ step['step'] | int }} as step
    union
    {% endfor -%}
    {%- endfor -%}
    select distinct phase, step from eligible

),

clubs as (

    select distinct club_id from customers

),

grid as (

    select
        months.month,
        clubs.club_id,
        phase_steps.phase,
        phase_steps.step
    from months
    cross join clubs
    cross join phase_steps

),

final as (

    select
        cast(grid.month as date) as month,
        cast(grid.club_id as text) as club_id,
        cast(grid.phase as text) as phase,
        cast(grid.step as integer) as step,
        cast(coalesce(built_days.days_built, 0) as integer) as days_built,
        cast(coalesce(customer_days.customer_days, 0) as bigint) as customer_days,
        cast(coalesce(eligible.eligible_customer_days, 0) as bigint) as eligible_customer_days,
        cast(coalesce(eligible.eligible_customers, 0) as integer) as eligible_customers,
        cast(round(
            coalesce(eligible.eligible_customer_days, 0)
            / nullif(customer_days.customer_days, 0.0), 4
        ) as numeric(8, 4)) as eligible_share,
        cast(round(
            coalesce(eligible.eligible_customer_days, 0) / nullif(built_days.days_built, 0.0), 2
        ) as numeric(14, 2)) as avg_eligible_per_day
    from grid
    left join built_days
        on grid.month = built_days.month
    left join customer_days
        on grid.month = customer_days.month and grid.club_id = customer_days.club_id
    left join eligible
        on
            grid.month = eligible.month
            and grid.club_id = eligible.club_id
            and grid.phase = eligible.phase
            and grid.step = eligible.step

)

select * from final
