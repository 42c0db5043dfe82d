with

source as (

    select * from {{ source('ops', 'message_events') }}

),

final as (

    select
        event_id,
        provider,
        channel,
        event_type,
        outbox_id,
        provider_message_id,
        provider_event_id,
        reason,
        suppression,
        customers_affected,
        occurred_at,
        received_at,
        -- one vocabulary for both providers and the call centre (a call that reached the
        -- customer is delivered, whatever they said; no answer is undelivered, a wrong number
        -- bounced: the phone is dead); null for inbound SMS (not about a message we sent)
        case event_type
            when 'processed' then 'accepted'
            when 'queued' then 'accepted'
            when 'sent' then 'sent'
            when 'deferred' then 'deferred'
            when 'delivered' then 'delivered'
            when 'bounce' then 'bounced'
            when 'dropped' then 'dropped'
            when 'undelivered' then 'undelivered'
            when 'failed' then 'failed'
            when 'open' then 'opened'
            when 'click' then 'clicked'
            when 'spamreport' then 'complained'
            when 'unsubscribe' then 'unsubscribed'
            when 'group_unsubscribe' then 'unsubscribed'
            when 'call_reached' then 'delivered'
            when 'call_not_interested' then 'delivered'
            when 'call_interested' then 'delivered'
            when 'call_booked' then 'delivered'
            when 'call_no_answer' then 'undelivered'
            when 'call_wrong_number' then 'bounced'
        end as message_status,
        -- the recipient (or an inbound SMS's sender) as ops.dead_contacts keys it: a phone's
        -- digits with its +, an email in lower case (lifecycle.contacts.normalize)
        case
            when channel = 'email' then nullif(lower(trim(address)), '')
            else nullif(regexp_replace(address, '[^0-9+]', '', 'g'), '')
        end as contact_address
    from source

)

select * from final
