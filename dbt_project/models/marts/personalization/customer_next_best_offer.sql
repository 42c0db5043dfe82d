{#-
    The "ideal profile" offer: for each customer on D, the services their look-alike regulars
    bought and they have not, ranked by the share of look-alikes who bought each. Look-alikes
    (the model's YAML states it in full): the other regulars with the same membership product,
    tenure band and visit band. Thresholds come from the rules file's
    policy.next_best_offer through var lifecycle_phases (macro lifecycle_setting).

    Computed per cohort, not per pair of customers: a cohort's regulars and its buyers of each
    service are counted once, and each customer reads their cohort's counts (minus themselves
    when they are a regular), so the cost grows with customers x services, not customers².
-#}
{%- set regular_min = lifecycle_setting('next_best_offer', 'regular_min_visits_30d') | int -%}
{%- set tenure_band = lifecycle_setting('next_best_offer', 'tenure_band_days') | int -%}
{%- set visits_band = lifecycle_setting('next_best_offer', 'visits_band_30d') | int -%}
{%- set min_lookalikes = lifecycle_setting('next_best_offer', 'min_lookalikes') | int -%}
{%- set min_share = lifecycle_setting('next_best_offer', 'min_share') | float -%}

{{ config(post_hook=[
    "create index on {{ this }} (customer_id, offer_rank)",
    "analyze {{ this }}",
]) }}

with

facts as (

    select
        customer_id,
        as_of_date,
        product,
        tenure_days,
        visits_last_30d
    from {{ ref('customer_facts') }}
    where product is not null

),

owned as not materialized (

    select
        customer_id,
        service
    from {{ ref('customer_service_purchases') }}

),

services as (

    select
        service,
        category
    from {{ ref('int_services_catalog') }}

),

profiles as (

    select
        customer_id,
        as_of_date,
        product,
        div(greatest(tenure_days, 0), {{ tenure_band }}) as tenure_band,
        div(greatest(visits_last_30d, 0), {{ visits_band }}) as visits_band,
        visits_last_30d >= {{ regular_min }} as is_regular
    from facts

),

cohorts as (

    select
        product,
        tenure_band,
        visits_band,
        count(*) as regulars
    from profiles
    where is_regular
    group by product, tenure_band, visits_band

),

cohort_buyers as (

    -- regulars of each cohort who bought each catalog service by D
    select
        profiles.product,
        profiles.tenure_band,
        profiles.visits_band,
        owned.service,
        count(*) as buyers
    from profiles
    inner join owned
        on profiles.customer_id = owned.customer_id
    inner join services
        on owned.service = services.service
    where profiles.is_regular
    group by profiles.product, profiles.tenure_band, profiles.visits_band, owned.service

),

candidates as (

    -- a service the customer never bought: the buyers are other customers, the look-alikes
    -- are the cohort's regulars without the customer
    select
        profiles.customer_id,
        profiles.as_of_date,
        cohort_buyers.service,
        cohorts.regulars - case when profiles.is_regular then 1 else 0 end as lookalikes,
        cohort_buyers.buyers as lookalikes_buying
    from profiles
    inner join cohorts
        on
            profiles.product = cohorts.product
            and profiles.tenure_band = cohorts.tenure_band
            and profiles.visits_band = cohorts.visits_band
    inner join cohort_buyers
        on
            profiles.product = cohort_buyers.product
            and profiles.tenure_band = cohort_buyers.tenure_band
            and profiles.visits_band = cohort_buyers.visits_band
    where not exists (
        select 1
        from owned
        where
            owned.customer_id = profiles.customer_id
            and owned.service = cohort_buyers.service
    )

),

shares as (

    select
        candidates.*,
        candidates.lookalikes_buying::numeric / candidates.lookalikes as share_among_lookalikes
    from candidates
    where candidates.lookalikes >= {{ min_lookalikes }}

),

final as (

    select
        cast(shares.customer_id as text) as customer_id,
        cast(shares.as_of_date as date) as as_of_date,
        cast(shares.service as text) as service,
        cast(services.category as text) as category,
        -- ties share a rank: the planner then prefers the catalog entry with the higher margin
        cast(rank() over (
            partition by shares.customer_id
            order by shares.share_among_lookalikes desc
        ) as integer) as offer_rank,
        cast(round(shares.share_among_lookalikes, 4) as numeric(5, 4)) as share_among_lookalikes,
        cast(shares.lookalikes as integer) as lookalikes,
        cast(shares.lookalikes_buying as integer) as lookalikes_buying
    from shares
    inner join services
        on shares.service = services.service
    where shares.share_among_lookalikes >= {{ min_share }}

)

select * from final
