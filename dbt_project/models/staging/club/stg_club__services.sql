with

source as (

    select * from {{ source('club', 'services') }}

),

final as (

    select
        lower(trim(service)) as service,
        lower(trim(category)) as category
    from source

)

select * from final
