with

source as (

    select * from {{ source('club', 'consents') }}

),

final as (

    select
        customer_id,
        lower(trim(channel)) as channel,
        opted_in,
        updated_at
    from source

)

select * from final
