with

source as (

    select * from {{ source('club', 'visits') }}

),

final as (

    select
        visit_id,
        customer_id,
        visited_at
    from source

)

select * from final
