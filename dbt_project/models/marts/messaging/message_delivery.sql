{#- Incremental. A message's row changes only when its outbox row is written (every writer
    stamps updated_at: planning's insert, claims, results, expiries, reconciliation, call
    outcomes) or an event about it is received (received_at). A build computes again the
    messages whose outbox row was updated, or which received an event, after the latest such
    time the table holds (less message_delivery_lookback_hours, for a transaction that
    stamped now() before that time and committed after the last build read the tables), from
    all their events; the other rows are kept. The first build, and one over a table without
    these two columns, computes every message. Not dated by D: it is the outbox as it is.
    Outbox rows are never deleted; a row deleted by hand stays here until a --full-refresh.

    The key's unique index: it refuses a duplicate message as it is written (the data test
    checks it in the catalog, not by a group-by of every message) and serves the batch's
    delete and a report's lookup of one message. -#}
{%- set lookback_hours = var('message_delivery_lookback_hours', 24) | int -%}

{#- A table from before the marks' columns: emptied first (in the build's transaction), and
    every message computed, as on a first build. -#}
{%- set legacy_hook -%}{% raw %}
    {%- if is_incremental() and not message_delivery_holds_marks(this) -%}
        truncate {{ this }}
    {%- endif -%}
{% endraw %}{%- endset -%}

{{ config(
    materialized='incremental',
    incremental_strategy='delete_insert_where',
    unique_key=['outbox_id'],
    on_schema_change='append_new_columns',
    pre_hook=[legacy_hook],
    post_hook=["{{ ensure_index(this, ['outbox_id'], unique=true) }}"],
) }}

{#- Only the messages written or reported on since the marks: on an incremental build over a
    table that holds them (a unit test's `this` fixture does). -#}
{%- set since_marks = is_incremental() and (
    model.resource_type == 'unit_test' or not execute or message_delivery_holds_marks(this)
) -%}

with

{% if since_marks %}

-- the messages whose row may have changed since the last build: read by scanning both
-- tables' time columns (no index: one on the outbox's updated_at would end its HOT updates)
changed as (

    select outbox.outbox_id
    from {{ ref('stg_ops__outbox') }} as outbox
    where
        outbox.updated_at
        > {{ high_water_mark('_outbox_updated_at') }} - interval '{{ lookback_hours }} hours'

    union

    select events.outbox_id
    from {{ ref('stg_ops__message_events') }} as events
    where
        events.outbox_id is not null
        and events.received_at
        > {{ high_water_mark('_events_received_at') }} - interval '{{ lookback_hours }} hours'

),

{% endif %}

outbox as (

    select * from {{ ref('stg_ops__outbox') }}
    {%- if since_marks %}
    where outbox_id in (select changed.outbox_id from changed)
    {%- endif %}

),

events as (

    select * from {{ ref('stg_ops__message_events') }}
    where
        outbox_id is not null and message_status is not null
        {%- if since_marks %}
        and outbox_id in (select changed.outbox_id from changed)
        {%- endif %}

),

-- How far a message got: engagement outranks delivery, delivery outranks a temporary deferral.
ranked_events as (

    select
        *,
        case message_status
            when 'complained' then 11
            when 'unsubscribed' then 10
            when 'clicked' then 9
            when 'opened' then 8
            when 'delivered' then 7
            when 'bounced' then 6
            when 'dropped' then 6
            when 'undelivered' then 6
            when 'failed' then 6
            when 'deferred' then 3
            when 'sent' then 2
            when 'accepted' then 1
        end as status_rank
    from events

),

per_message as (

    select
        outbox_id,
        count(*) as events,
        min(occurred_at) filter (where message_status = 'accepted') as accepted_at,
        min(occurred_at) filter (where message_status = 'sent') as provider_sent_at,
        min(occurred_at) filter (where message_status = 'deferred') as deferred_at,
        min(occurred_at) filter (where message_status = 'delivered') as delivered_at,
        min(occurred_at) filter (where message_status = 'opened') as first_opened_at,
        min(occurred_at) filter (where message_status = 'clicked') as first_clicked_at,
        min(occurred_at) filter (
            where message_status in ('bounced', 'dropped', 'undelivered', 'failed')
        ) as failed_at,
        min(occurred_at) filter (where message_status = 'complained') as complained_at,
        min(occurred_at) filter (where message_status = 'unsubscribed') as unsubscribed_at,
        count(*) filter (where message_status = 'opened') as opens,
        count(*) filter (where message_status = 'clicked') as clicks,
        max(occurred_at) as last_event_at,
        (array_agg(message_status order by status_rank desc, occurred_at desc, event_id desc))[1]
            as furthest_status,
        (array_agg(message_status order by occurred_at desc, event_id desc))[1]
            as last_event_status,
        max(received_at) as events_received_at
    from ranked_events
    group by outbox_id

),

final as (

    select
        outbox.outbox_id,
        outbox.plan_date,
        outbox.customer_id,
        outbox.phase,
        outbox.step,
        outbox.channel,
        outbox.variant,
        outbox.status as outbox_status,
        outbox.skip_reason,
        outbox.provider_id,
        outbox.send_at,
        outbox.sent_at,
        -- what the provider reported furthest, else what our side knows
        coalesce(
            per_message.furthest_status,
            case
                when outbox.skip_reason is not null then 'skipped'
                when outbox.status = 'sent' then 'sent'
                else outbox.status
            end
        ) as delivery_status,
        per_message.last_event_status,
        per_message.last_event_at,
        per_message.accepted_at,
        per_message.provider_sent_at,
        per_message.deferred_at,
        per_message.delivered_at,
        per_message.first_opened_at,
        per_message.first_clicked_at,
        per_message.failed_at,
        per_message.complained_at,
        per_message.unsubscribed_at,
        coalesce(per_message.events, 0) as events,
        coalesce(per_message.opens, 0) as opens,
        coalesce(per_message.clicks, 0) as clicks,
        per_message.delivered_at is not null as is_delivered,
        -- what the next build's batch starts after (the high-water marks)
        outbox.updated_at as _outbox_updated_at,
        per_message.events_received_at as _events_received_at
    from outbox
    left join per_message on per_message.outbox_id = outbox.outbox_id

)

select * from final
