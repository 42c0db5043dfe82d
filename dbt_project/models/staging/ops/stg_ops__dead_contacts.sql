with

source as (

    select * from {{ source('ops', 'dead_contacts') }}

),

final as (

    select
        kind,
        address,
        evidence,
        observed_at,
        source as evidence_source,
        created_at
    from source

)

select * from final
