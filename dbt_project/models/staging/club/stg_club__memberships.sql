with

source as (

    select * from {{ source('club', 'memberships') }}

),

final as (

    select
        membership_id,
        customer_id,
        trim(product) as product,
        purchased_on,
        starts_on,
        ends_on,
        cast(price as numeric(12, 2)) as price,
        lower(trim(status)) as status,
        lower(trim(status)) = 'cancelled' as is_cancelled,
        _loaded_at
    from source

)

select * from final
