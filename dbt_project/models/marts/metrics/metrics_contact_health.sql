{#- The share of dead and unconfirmed contacts by time since their last confirmation, as of D,
    beside the decay the CLM article reports for a base left uncontacted (seed
    contact_decay_reference). -#}
with

contact_health as (

    select * from {{ ref('contact_health') }}

),

reference as (

    select * from {{ ref('contact_decay_reference') }}

),

clubs_and_kinds as (

    select distinct club_id, contact_kind
    from contact_health

),

-- every bucket for every club and kind, so an empty bucket shows as 0 contacts, not a gap
grid as (

    select
        clubs_and_kinds.club_id,
        clubs_and_kinds.contact_kind,
        reference.age_bucket,
        reference.bucket_order,
        reference.label,
        reference.reference_dead_share_low,
        reference.reference_dead_share_high
    from clubs_and_kinds
    cross join reference

),

counts as (

    select
        club_id,
        contact_kind,
        age_bucket,
        count(*) as contacts,
        count(*) filter (where status = 'dead') as dead_contacts,
        count(*) filter (where status = 'unconfirmed') as unconfirmed_contacts,
        count(*) filter (where status = 'alive') as alive_contacts
    from contact_health
    group by club_id, contact_kind, age_bucket

),

final as (

    select
        {{ as_of_date() }} as as_of_date,
        grid.club_id,
        grid.contact_kind,
        grid.age_bucket,
        grid.bucket_order,
        grid.label,
        cast(coalesce(counts.contacts, 0) as integer) as contacts,
        cast(coalesce(counts.dead_contacts, 0) as integer) as dead_contacts,
        cast(coalesce(counts.unconfirmed_contacts, 0) as integer) as unconfirmed_contacts,
        cast(coalesce(counts.alive_contacts, 0) as integer) as alive_contacts,
        cast(round(counts.dead_contacts / nullif(counts.contacts, 0.0), 4) as numeric(8, 4))
            as dead_share,
        cast(
            round(counts.unconfirmed_contacts / nullif(counts.contacts, 0.0), 4) as numeric(8, 4)
        ) as unconfirmed_share,
        cast(grid.reference_dead_share_low as numeric(8, 4)) as reference_dead_share_low,
        cast(grid.reference_dead_share_high as numeric(8, 4)) as reference_dead_share_high
    from grid
    left join counts
        on grid.club_id = counts.club_id
        and grid.contact_kind = counts.contact_kind
        and grid.age_bucket = counts.age_bucket

)

select * from final
