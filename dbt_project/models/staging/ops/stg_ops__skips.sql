with

source as (

    select * from {{ source('ops', 'skips') }}

),

final as (

    select
        plan_date,
        customer_id,
        phase,
        step,
        reason,
        -- the message a control-group customer would have received (reason control_group)
        channel,
        variant,
        message_key,
        created_at
    from source

)

select * from final
