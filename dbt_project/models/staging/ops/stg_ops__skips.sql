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
        created_at
    from source

)

select * from final
