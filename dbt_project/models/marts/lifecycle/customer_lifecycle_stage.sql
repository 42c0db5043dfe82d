{#- The descriptive lifecycle stage of each customer on D; the rules are in the model's
    description (_lifecycle__models.yml) and docs/data-contract.md. First matching rule wins. -#}

{#- The not-null columns (not_null_by_constraint in the yml) in one scan, then the key. -#}
{{ config(post_hook=[
    "{{ set_not_null_columns() }}",
    "create unique index on {{ this }} (customer_id)",
]) }}

with

customer_facts as (

    select * from {{ ref('customer_facts') }}

),

eligibility as (

    select * from {{ ref('customer_phase_eligibility') }}

),

eligible_sets as (

    select
        customer_id,
        string_agg(phase || ':' || step, ',' order by phase, step) as eligible_phases
    from eligibility
    group by customer_id

),

staged as (

    select
        customer_facts.customer_id,
        customer_facts.club_id,
        customer_facts.as_of_date,
        customer_facts.rfm_segment,
        case
            -- never held a membership (a cancelled one does not count)
            when
                customer_facts.membership_id is null
                or customer_facts.membership_status = 'cancelled'
                then 'prospect'
            -- a membership held or bought for later, bought in the last 30 days
            when
                customer_facts.membership_status in ('active', 'frozen', 'upcoming')
                and customer_facts.days_since_purchase <= 30
                then 'onboarding'
            when
                customer_facts.has_active_membership
                and customer_facts.days_until_end <= 45
                and not customer_facts.has_renewal
                then 'renewal_due'
            when customer_facts.membership_status in ('active', 'frozen', 'upcoming')
                then 'active'
            when customer_facts.days_since_end <= 119
                then 'lapsed'
            else 'lost'
        end as stage
    from customer_facts

),

final as (

    select
        cast(staged.customer_id as text) as customer_id,
        cast(staged.club_id as text) as club_id,
        cast(staged.as_of_date as date) as as_of_date,
        cast(staged.stage as text) as stage,
        cast({{ exponea_stage('staged.rfm_segment') }} as text) as exponea_stage,
        cast(coalesce(eligible_sets.eligible_phases, '') as text) as eligible_phases
    from staged
    left join eligible_sets
        on staged.customer_id = eligible_sets.customer_id

)

select * from final
