{#-
    Incremental. A row's derived values change only when the customer's memberships change
    (raw _loaded_at newer than the latest held) or when D crosses one of their dates: a
    purchase becomes known (purchased_on), a period starts (starts_on) or ends (ends_on + 1).
    A build of D after the last one built (the latest derived_as_of, L) therefore re-derives
    only the customers with such an event in (L, D], all their memberships at once (the
    windows partition by customer), and replaces their rows; every other row still holds for
    D. A build of D before L re-derives every customer, after the pre-hook drops the
    memberships bought after D. A membership deleted from raw needs a full refresh.
-#}
{%- set state = derived_state() -%}
{%- set last_derived, watermark, rewinding = state.last_derived, state.watermark,
    state.rewinding -%}

{%- set drop_after_as_of -%}{% raw %}
    {%- if is_incremental() -%}
        delete from {{ this }}
        where
            purchased_on > {{ as_of_date() }}
            and {{ as_of_date() }} < (select max(derived_as_of) from {{ this }})
    {%- endif -%}
{% endraw %}{%- endset -%}

{#- The unique index is the key's test: a duplicate fails the build (no `unique` test);
    (customer_id) finds the rows a build replaces. -#}
{{ config(
    materialized='incremental',
    incremental_strategy='delete_insert_where',
    unique_key=['customer_id'],
    on_schema_change='fail',
    pre_hook=[drop_after_as_of],
    post_hook=[
        "{{ set_not_null_columns() }}",
        "{{ ensure_index(this, ['membership_id'], unique=true) }}",
        "{{ ensure_index(this, ['customer_id']) }}",
        "analyze {{ this }}",
    ],
) }}

with

memberships as (

    select * from {{ ref('stg_club__memberships') }}

),

as_of as (

    select {{ as_of_date() }} as as_of_date

),

{% if is_incremental() %}

-- the customers whose rows may differ from the stored ones: memberships (re)loaded since,
-- or a purchase, start or end crossed by D since L (every customer when rewinding)
rederived_customers as (

    select distinct memberships.customer_id
    from memberships
    where
        {{ rewinding }}
        or memberships._loaded_at > {{ watermark }}
        or (
            memberships.purchased_on > {{ last_derived }}
            and memberships.purchased_on <= {{ as_of_date() }}
        )
        or (
            memberships.starts_on > {{ last_derived }}
            and memberships.starts_on <= {{ as_of_date() }}
        )
        or (
            memberships.ends_on >= {{ last_derived }}
            and memberships.ends_on < {{ as_of_date() }}
        )

),

{% endif %}

known_on_as_of as (

    -- a membership bought after D did not exist on D
    select
        memberships.*,
        as_of.as_of_date
    from memberships
    cross join as_of
    where
        memberships.purchased_on <= as_of.as_of_date
        {%- if is_incremental() %}
        and memberships.customer_id in (select customer_id from rederived_customers)
        {%- endif %}

),

flagged as (

    select
        *,
        -- frozen counts: the member still holds the period
        (not is_cancelled and starts_on <= as_of_date and ends_on >= as_of_date)
            as is_active_on_as_of,
        case
            when is_cancelled then 'cancelled'
            when starts_on > as_of_date then 'upcoming'
            when ends_on < as_of_date then 'expired'
            when status = 'frozen' then 'frozen'
            else 'active'
        end as membership_status
    from known_on_as_of

),

ordered as (

    select
        *,
        cast(row_number() over (
            partition by customer_id
            order by purchased_on, starts_on, membership_id
        ) as integer) as membership_number,
        max(starts_on) filter (where not is_cancelled) over (
            partition by customer_id
        ) as latest_kept_starts_on,
        -- current: active on D with the latest start; else the latest end, cancelled last
        row_number() over (
            partition by customer_id
            order by
                is_active_on_as_of desc,
                is_cancelled asc,
                case when is_active_on_as_of then starts_on end desc nulls last,
                ends_on desc,
                starts_on desc,
                purchased_on desc,
                membership_id desc
        ) as current_rank,
        -- the renewal: the first kept membership starting later, in (starts_on, purchased_on,
        -- membership_id) order, found as the least of those keys written as fixed-width text
        min(
            case when not is_cancelled then
                to_char(starts_on, 'YYYYMMDD') || to_char(purchased_on, 'YYYYMMDD')
                || membership_id
            end collate "C"
        ) over (
            partition by customer_id
            order by starts_on
            range between interval '1 day' following and unbounded following
        ) as next_kept_key,
        -- the latest end among kept memberships that started before this one
        max(ends_on) filter (where not is_cancelled) over (
            partition by customer_id
            order by starts_on
            range between unbounded preceding and interval '1 day' preceding
        ) as previous_kept_ends_on
    from flagged

),

final as (

    select
        membership_id,
        customer_id,
        product,
        purchased_on,
        starts_on,
        ends_on,
        price,
        status,
        is_cancelled,
        as_of_date as derived_as_of,
        _loaded_at,
        membership_number,
        is_active_on_as_of,
        membership_status,
        -- renewed: another kept membership, bought by D, starts after this one
        coalesce(latest_kept_starts_on > starts_on, false) as has_renewal,
        substr(next_kept_key, 17) as renewal_membership_id,
        -- days no membership covered between the previous one's end and this start:
        -- 0 = renewed seamlessly, negative = overlapping, null = no earlier kept membership
        starts_on - previous_kept_ends_on - 1 as gap_days_before,
        current_rank = 1 as is_current
    from ordered

)

select * from final
