{#-
    Beside stg_club__customers rather than in it: that model is an incremental table that fails
    on a schema change, so a new column there would stop every existing warehouse's build.
-#}
with

source as (

    select * from {{ source('club', 'customers') }}

),

final as (

    select
        customer_id,
        contact_updated_at
    from source
    where contact_updated_at is not null

)

select * from final
