with

source as (

    select * from {{ source('club', 'purchases') }}

),

final as (

    select
        purchase_id,
        customer_id,
        lower(trim(service)) as service,
        purchased_at,
        cast(amount as numeric(12, 2)) as amount,
        _loaded_at
    from source

)

select * from final
