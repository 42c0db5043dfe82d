with

visits as (

    select * from {{ ref('stg_club__visits') }}

),

customers as (

    select * from {{ ref('stg_club__customers') }}

),

visits_local as (

    select
        visits.customer_id,
        {{ local_date('visits.visited_at', 'customers.timezone') }} as visit_date
    from visits
    inner join customers
        on visits.customer_id = customers.customer_id

),

final as (

    select
        customer_id,
        visit_date,
        cast(count(*) as integer) as visits_count
    from visits_local
    group by customer_id, visit_date

)

select * from final
