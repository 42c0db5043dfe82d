{#-
    Each phase step's exposures and whether they converted within the phase's attribution
    window. Treated, intention to treat: every message planned (an outbox row, whatever became
    of it: sent, failed, expired, unknown or still planned). Control: every control-group
    customer held back where its message would have been written (a control_group skip with
    the channel it would have gone on; rows written before skips recorded it are left out). The windows come from the rules file through var lifecycle_phases (each phase's
    `conversion`, macros/conversion_windows.sql): a conversion counts on the days after the
    step's day up to `within_days` later, or, when it is null (retention), up to the
    membership's end plus `grace_days`. Only events up to D count.

    Incremental: a row is final once it was computed conversion_settle_days or more after its
    window ended, with the window the rules still give its phase (phase_conversion_is_final).
    A build of D computes every other row again from its own exposure (and a post-hook
    deletes the older copy), with the exposures planned since the last build (outbox and skip
    days from its day less the settle days): each day's work is the exposures whose windows
    are open or settling, not the whole history. An empty table reads every exposure (the
    first build after a month of sends counts the month), and a build keeps no row computed
    on a later day than its own (a rebuild of an earlier day), so the latest computed_on is
    never after the last build's day.
-#}
{%- set settle_days = conversion_settle_days() -%}

{#- Before a build over a table without the columns that say which rows are final, its rows
    go (the build computes every row). After a build, the rows not final that an earlier
    build wrote go: the build has just written them again (or dropped them, for a day before
    their exposure). Both in the build's transaction. -#}
{%- set legacy_hook -%}{% raw %}
    {%- if is_incremental() and not phase_conversions_table_is_current(this) -%}
        delete from {{ this }}
    {%- endif -%}
{% endraw %}{%- endset -%}

{%- set replaced_hook -%}{% raw %}
    delete from {{ this }} as prior
    where prior.dbt_invocation_id is distinct from '{{ invocation_id }}'
        and not {{ phase_conversion_is_final('prior') }}
{% endraw %}{%- endset -%}

{#- A final row kept by a build of an earlier day than it was computed on is final as of
    that day too (that is why it was kept); it gets that day, so the next build reads the
    exposures from the day the table was last built, not from a later one. -#}
{%- set rewound_hook -%}{% raw %}
    update {{ this }} set computed_on = {{ as_of_date() }}
    where computed_on > {{ as_of_date() }}
{% endraw %}{%- endset -%}

{{ config(
    materialized='incremental',
    incremental_strategy='append',
    on_schema_change='sync_all_columns',
    pre_hook=[legacy_hook],
    post_hook=[
        replaced_hook,
        rewound_hook,
        "{{ ensure_index(this, ['customer_id', 'phase', 'step']) }}",
    ],
) }}

{#- Which rows to keep, and from which planning day to read new exposures ("since": the
    last build's day, or D if earlier, less the settle days; rows not final are computed again
    from their own exposure, however old): everything in a first or full build, when the
    table is empty (no build day to start from: `least` alone would ignore the missing day
    and read only the last settle days), or when the table predates the columns that say
    which rows are final. The day is read before the
    build, so the planner sees a constant; a unit test has no table to read, there it stays a
    subquery over the `this` fixture. -#}
{%- set in_unit_test = model.resource_type == 'unit_test' -%}
{%- set keep_final = is_incremental()
    and (in_unit_test or phase_conversions_table_is_current(this)) -%}
{%- set since = none -%}
{%- if keep_final -%}
    {%- set since_sql -%}
        select case when max(prior.computed_on) is not null
            then least(max(prior.computed_on), {{ as_of_date() }}) - {{ settle_days }}
        end
        from {{ this }} as prior
    {%- endset -%}
    {%- if not in_unit_test -%}
        {%- set since_day = run_query(since_sql).columns[0][0] -%}
        {%- if since_day is not none -%}
            {%- set since = "cast('" ~ since_day ~ "' as date)" -%}
        {%- endif -%}
    {%- else -%}
        {%- set since = "coalesce((" ~ since_sql ~ "), '-infinity'::date)" -%}
    {%- endif -%}
{%- endif %}

with

outbox as (

    select * from {{ ref('stg_ops__outbox') }}

),

skips as (

    select * from {{ ref('stg_ops__skips') }}

),

-- not materialized: read twice, and the per-exposure lookup in with_membership must reach
-- raw.memberships' customer index; a materialized copy has none, and each exposure then
-- scanned every membership (a demo day's build grew from 1 s to 8 s in ten days)
memberships as not materialized (

    select * from {{ ref('stg_club__memberships') }}

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

windows as (

    select * from {{ conversion_windows() }}

),

treated as (

    -- intention to treat: a message planned, whatever became of it (sent, failed, expired,
    -- unknown, skipped at dispatch, still planned), as the control arm is the messages that
    -- would have been planned; the step's day is its planning day
    select
        outbox.customer_id,
        outbox.phase,
        outbox.step,
        'treated' as arm,
        outbox.variant,
        outbox.channel,
        outbox.plan_date as exposed_on
    from outbox
    cross join as_of
    where outbox.plan_date <= as_of.as_of_date
        {%- if since %}
        and outbox.plan_date >= {{ since }}
        {%- endif %}

),

control_days as (

    -- a control-group customer held back where its message would have been written, with
    -- that message's variant and channel; control rows without a channel predate it (they
    -- were held back before the other rules were applied) and are not comparable
    select
        skips.customer_id,
        skips.phase,
        skips.step,
        skips.variant,
        skips.channel,
        skips.plan_date
    from skips
    cross join as_of
    where skips.reason = 'control_group'
        and skips.channel is not null
        and skips.plan_date <= as_of.as_of_date
        {%- if since %}
        and skips.plan_date >= {{ since }}
        {%- endif %}

),

exposure_days as (

    select
        customer_id,
        phase,
        step,
        arm,
        variant,
        channel,
        exposed_on
    from treated

    union all

    select
        customer_id,
        phase,
        step,
        'control' as arm,
        variant,
        channel,
        plan_date as exposed_on
    from control_days
    {%- if keep_final %}

    union all

    -- the rows not final yet, computed again from their own exposure (a later build of an
    -- earlier day drops those after it)
    select
        prior.customer_id,
        prior.phase,
        prior.step,
        prior.arm,
        prior.variant,
        prior.channel,
        prior.exposed_on
    from {{ this }} as prior
    cross join as_of
    where prior.exposed_on <= as_of.as_of_date
        and not {{ phase_conversion_is_final('prior') }}
    {%- endif %}

),

with_membership as (

    -- the membership the step was about: the customer's latest one bought by that day
    select
        exposure_days.*,
        current_membership.membership_id,
        current_membership.ends_on as membership_ends_on
    from exposure_days
    left join lateral (
        select
            memberships.membership_id,
            memberships.ends_on
        from memberships
        where memberships.customer_id = exposure_days.customer_id
            and not memberships.is_cancelled
            and memberships.purchased_on <= exposure_days.exposed_on
        order by memberships.purchased_on desc, memberships.membership_id desc
        limit 1
    ) as current_membership on true

),

exposures as (

    -- a step is exposed once per membership: planning takes its key with the first message
    -- or control would-have (a message that certainly did not go out releases the key and
    -- the step can be planned again: the exposure stays the first day)
    select distinct on (customer_id, phase, step, arm, coalesce(membership_id, ''))
        with_membership.*
    from with_membership
    order by customer_id, phase, step, arm, coalesce(membership_id, ''), exposed_on

),

to_compute as (

    select * from exposures
    {%- if keep_final %}
    -- a final row keeps its key: a later day of the same exposure does not open another
    where not exists (
        select 1
        from {{ this }} as prior
        where
            prior.customer_id = exposures.customer_id
            and prior.phase = exposures.phase
            and prior.step = exposures.step
            and prior.arm = exposures.arm
            and prior.membership_id is not distinct from exposures.membership_id
            and {{ phase_conversion_is_final('prior') }}
    )
    {%- endif %}

),

windowed as (

    select
        to_compute.*,
        windows.conversion_event,
        windows.within_days,
        windows.grace_days,
        case
            when windows.within_days is not null
                then to_compute.exposed_on + windows.within_days
            else to_compute.membership_ends_on + windows.grace_days
        end as window_ends_on
    from to_compute
    inner join windows
        on to_compute.phase = windows.phase

),

-- not materialized: read once per exposure, by customer, so each branch must reach its
-- table's customer index rather than a copy of every visit day, purchase and membership
events as not materialized (

    select
        customer_id,
        'first_visit' as conversion_event,
        visit_date as event_date,
        null as membership_id,
        0::numeric(12, 2) as amount
    from visits_daily
    where visits_count > 0

    union all

    select
        customer_id,
        case category
            when 'addon' then 'addon_purchase'
            else 'cross_sell_purchase'
        end as conversion_event,
        purchase_date as event_date,
        null as membership_id,
        amount
    from purchases
    where category in ('addon', 'cross_sell')

    union all

    -- a renewal and a new membership are both a membership bought after the step
    select
        memberships.customer_id,
        kinds.conversion_event,
        memberships.purchased_on as event_date,
        memberships.membership_id,
        memberships.price as amount
    from memberships
    cross join (values ('renewal'), ('new_membership')) as kinds (conversion_event)
    where not memberships.is_cancelled

),

final as (

    -- each exposure's conversion events, looked up by its customer: an exposure is one row
    -- (exposures is distinct on the key), so its lookup is the aggregate of its own events;
    -- one join of every exposure to every event day sorted ~95M rows at a million customers
    select
        windowed.customer_id,
        windowed.phase,
        windowed.step,
        windowed.arm,
        windowed.variant,
        windowed.channel,
        windowed.membership_id,
        windowed.exposed_on,
        windowed.conversion_event,
        windowed.within_days,
        windowed.grace_days,
        windowed.window_ends_on,
        windowed.window_ends_on <= as_of.as_of_date as is_window_closed,
        conversions.converted_on is not null as converted,
        conversions.converted_on,
        coalesce(conversions.revenue, 0)::numeric(12, 2) as revenue,
        -- the day this row was computed (D); a final row keeps its day in later builds
        as_of.as_of_date as computed_on,
        -- the dbt run that computed it (the post-hook tells the rows it wrote from older ones)
        '{{ invocation_id }}'::text as dbt_invocation_id
    from windowed
    cross join as_of
    cross join lateral (
        select
            min(events.event_date) as converted_on,
            sum(events.amount) as revenue
        from events
        where
            events.customer_id = windowed.customer_id
            and events.conversion_event = windowed.conversion_event
            and events.event_date > windowed.exposed_on
            and events.event_date <= windowed.window_ends_on
            and events.event_date <= as_of.as_of_date
            -- the membership the step was about is not its own renewal
            and (
                events.membership_id is null
                or events.membership_id is distinct from windowed.membership_id
            )
    ) as conversions

)

select * from final
