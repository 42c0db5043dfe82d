{#-
    Whether each customer's phone and email still reach them, as of D (var as_of_date).

    A contact is confirmed alive on the day it was given (created_at, or contact_updated_at
    when the club recorded a newer one) and on every day something came back from it: a
    delivered (or opened, clicked) SMS or email, an inbound SMS (any reply, a STOP too: a
    person answered), a call that reached the person (call_reached, call_not_interested,
    call_interested, call_booked). Events match the contact by address, as ops.dead_contacts
    keys it; an event without an address counts for the contact of its outbox message's
    customer. Dead: a row of ops.dead_contacts observed by D.
-#}
{%- set alive_days = var('contact_alive_days') | int -%}

with

customers as (

    select * from {{ ref('stg_club__customers') }}
    where customer_since <= {{ as_of_date() }}

),

contact_updates as (

    select * from {{ ref('stg_club__contact_updates') }}

),

events as (

    select * from {{ ref('stg_ops__message_events') }}

),

outbox as (

    select * from {{ ref('stg_ops__outbox') }}

),

dead_contacts as (

    select * from {{ ref('stg_ops__dead_contacts') }}

),

-- one row per customer and contact kind with a valid address
contacts as (

    select customer_id, club_id, timezone, created_at, 'phone' as contact_kind, phone as address
    from customers
    where phone_valid
    union all
    select customer_id, club_id, timezone, created_at, 'email' as contact_kind, email as address
    from customers
    where email_valid

),

-- what came back from an address by the end of D (in the club's time zone)
confirming_events as (

    select
        case when events.channel = 'email' then 'email' else 'phone' end as contact_kind,
        events.contact_address,
        outbox.customer_id as outbox_customer_id,
        events.occurred_at,
        case
            when events.event_type like 'call\_%' then 'call'
            when events.event_type like 'inbound%' then 'reply'
            else 'delivered'
        end as confirmed_by
    from events
    left join outbox on events.outbox_id = outbox.outbox_id
    where events.occurred_at < {{ local_day_start(as_of_date() ~ ' + 1', "'" ~ var('club_timezone') ~ "'") }}
        and (
            (events.channel in ('sms', 'email')
                and events.message_status in ('delivered', 'opened', 'clicked'))
            or events.event_type in ('inbound', 'inbound_opt_out', 'inbound_opt_in')
            or events.event_type in (
                'call_reached', 'call_not_interested', 'call_interested', 'call_booked'
            )
        )

),

last_event_by_address as (

    select distinct on (contact_kind, contact_address)
        contact_kind,
        contact_address,
        occurred_at,
        confirmed_by
    from confirming_events
    where contact_address is not null
    order by contact_kind, contact_address, occurred_at desc, confirmed_by

),

last_event_by_customer as (

    select distinct on (contact_kind, outbox_customer_id)
        contact_kind,
        outbox_customer_id as customer_id,
        occurred_at,
        confirmed_by
    from confirming_events
    where contact_address is null and outbox_customer_id is not null
    order by contact_kind, outbox_customer_id, occurred_at desc, confirmed_by

),

confirmations as (

    -- every candidate day a contact was confirmed, with what confirmed it
    select
        contacts.customer_id,
        contacts.contact_kind,
        {{ local_date('contacts.created_at', 'contacts.timezone') }} as confirmed_on,
        'created' as confirmed_by,
        4 as preference
    from contacts
    union all
    select
        contacts.customer_id,
        contacts.contact_kind,
        {{ local_date('contact_updates.contact_updated_at', 'contacts.timezone') }},
        'contact_updated',
        3
    from contacts
    inner join contact_updates on contacts.customer_id = contact_updates.customer_id
    where {{ local_date('contact_updates.contact_updated_at', 'contacts.timezone') }}
        <= {{ as_of_date() }}
    union all
    select
        contacts.customer_id,
        contacts.contact_kind,
        {{ local_date('last_event_by_address.occurred_at', 'contacts.timezone') }},
        last_event_by_address.confirmed_by,
        1
    from contacts
    inner join last_event_by_address
        on contacts.contact_kind = last_event_by_address.contact_kind
        and contacts.address = last_event_by_address.contact_address
    union all
    select
        contacts.customer_id,
        contacts.contact_kind,
        {{ local_date('last_event_by_customer.occurred_at', 'contacts.timezone') }},
        last_event_by_customer.confirmed_by,
        2
    from contacts
    inner join last_event_by_customer
        on contacts.contact_kind = last_event_by_customer.contact_kind
        and contacts.customer_id = last_event_by_customer.customer_id

),

last_confirmation as (

    -- the latest day up to D (an event late on D in the club's zone may be D + 1 in the
    -- customer's: it counts as D); on a tie, the strongest proof (an event over the record)
    select distinct on (customer_id, contact_kind)
        customer_id,
        contact_kind,
        least(confirmed_on, {{ as_of_date() }}) as last_confirmed_on,
        confirmed_by as last_confirmed_by
    from confirmations
    where confirmed_on <= {{ as_of_date() }} + 1
    order by customer_id, contact_kind, least(confirmed_on, {{ as_of_date() }}) desc, preference

),

joined as (

    select
        contacts.customer_id,
        contacts.club_id,
        contacts.contact_kind,
        contacts.address,
        last_confirmation.last_confirmed_on,
        last_confirmation.last_confirmed_by,
        {{ as_of_date() }} - last_confirmation.last_confirmed_on as days_since_confirmed,
        dead_contacts.evidence as dead_evidence,
        {{ local_date('dead_contacts.observed_at', 'contacts.timezone') }} as dead_on
    from contacts
    inner join last_confirmation
        on contacts.customer_id = last_confirmation.customer_id
        and contacts.contact_kind = last_confirmation.contact_kind
    left join dead_contacts
        on contacts.contact_kind = dead_contacts.kind
        and contacts.address = dead_contacts.address
        and dead_contacts.observed_at
            < {{ local_day_start(as_of_date() ~ ' + 1', "'" ~ var('club_timezone') ~ "'") }}

),

final as (

    select
        customer_id,
        club_id,
        contact_kind,
        address,
        last_confirmed_on,
        last_confirmed_by,
        days_since_confirmed,
        -- whole years since the last confirmation, by the calendar (2 years to the day is 2-3)
        case
            when last_confirmed_on + interval '5 years' <= {{ as_of_date() }} then '5_plus'
            when last_confirmed_on + interval '3 years' <= {{ as_of_date() }} then '3_to_5'
            when last_confirmed_on + interval '2 years' <= {{ as_of_date() }} then '2_to_3'
            else 'under_2'
        end as age_bucket,
        dead_evidence,
        dead_on,
        case
            when dead_evidence is not null then 'dead'
            when days_since_confirmed < {{ alive_days }} then 'alive'
            else 'unconfirmed'
        end as status,
        {{ as_of_date() }} as as_of_date
    from joined

)

select * from final
