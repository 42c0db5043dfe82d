with

source as (

    select * from {{ source('ops', 'outbox') }}

),

final as (

    select
        outbox_id,
        message_key,
        plan_date,
        customer_id,
        phase,
        step,
        cycle_key,
        channel,
        variant,
        status,
        attempts,
        provider_id,
        last_error,
        -- dispatch expires a planned row whose customer got suppressed after planning, with the
        -- skip reason as its last_error (lifecycle.delivery.dispatch.skip_suppressed), and one
        -- whose customer converted since the plan (lifecycle.delivery.recheck), or whose
        -- address died since (ops.dead_contacts: dead_contact)
        case
            when status = 'expired'
                and last_error in ('opted_out', 'hard_bounce', 'spam_complaint', 'suppressed',
                                   'dead_contact', 'converted_before_send')
                then last_error
        end as skip_reason,
        send_at,
        deadline_at,
        sent_at,
        created_at,
        updated_at
    from source

)

select * from final
