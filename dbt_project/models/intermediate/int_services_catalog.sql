with

club_services as (

    select * from {{ ref('stg_club__services') }}

),

seed_services as (

    select * from {{ ref('service_catalog') }}

),

final as (

    select
        service,
        category,
        'club' as catalog_source
    from club_services

    union all

    -- the shipped default applies only while the club has no catalog of its own
    select
        lower(trim(service)) as service,
        lower(trim(category)) as category,
        'seed' as catalog_source
    from seed_services
    where not exists (select 1 from club_services)

)

select * from final
