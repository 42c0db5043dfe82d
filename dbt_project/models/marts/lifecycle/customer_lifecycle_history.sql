{#-
    Stage spells: one row per customer per stretch of consecutive built days with the same
    stage, Exponea stage and eligible phase steps. Building day D extends the customer's spell
    that ends on D - 1 when nothing changed, else opens a new spell [D, D]. A day at or before
    the last day held is not rebuilt (no-op with a warning) unless var lifecycle_history_rewind
    is true: then the pre-hook first rewinds the history to D - 1. See _lifecycle__models.yml.
-#}
{%- set rewind = var('lifecycle_history_rewind', false) | string | lower | trim
    in ['true', 't', '1', 'yes', 'y', 'on'] -%}

{%- set rewind_hook -%}{% raw %}
    {%- if is_incremental() and (var('lifecycle_history_rewind', false) | string | lower | trim
        in ['true', 't', '1', 'yes', 'y', 'on']) -%}
        delete from {{ this }} where valid_from >= {{ as_of_date() }};
        update {{ this }}
        set
            valid_to = {{ as_of_date() }} - 1,
            days = ({{ as_of_date() }} - 1) - valid_from + 1
        where valid_to >= {{ as_of_date() }}
    {%- endif -%}
{% endraw %}{%- endset -%}

{#- The key index, (customer_id, valid_from), unique: a build that would write a second
    spell for the same customer and start fails. Nothing else is indexed: extending a spell
    rewrites only valid_to and days, so with no index on them the update is HOT (no index
    entry written, ~1M spells extended a day) where the page has room, which the fill factor
    leaves. Earlier versions indexed valid_to: those indexes are dropped. The hook cannot use
    is_incremental(), which is true by then. -#}
{%- set index_hook -%}{% raw %}
    do $$
    declare
        relation regclass := to_regclass('{{ this.include(database=false) }}');
        stale record;
    begin
        for stale in
            select distinct i.indexrelid::regclass as name
            from pg_index as i
            inner join pg_attribute as a
                on a.attrelid = i.indrelid and a.attnum = any(i.indkey)
            where i.indrelid = relation and a.attname in ('valid_to', 'days')
        loop
            execute 'drop index ' || stale.name;
        end loop;
        if not exists (select 1 from pg_index where indrelid = relation) then
            create unique index on {{ this }} (customer_id, valid_from);
        end if;
        if not coalesce(
            (select 'fillfactor=50' = any(reloptions) from pg_class where oid = relation), false
        ) then
            alter table {{ this }} set (fillfactor = 50);
        end if;
    end
    $$
{% endraw %}{%- endset -%}

{{ config(
    materialized='incremental',
    incremental_strategy='merge',
    unique_key=['customer_id', 'valid_from'],
    merge_update_columns=['valid_to', 'days'],
    on_schema_change='append_new_columns',
    pre_hook=[rewind_hook],
    post_hook=[index_hook, "{{ set_not_null_columns() }}"],
) }}

{%- if execute and model.resource_type == 'model' -%}
    {%- set day = var('as_of_date', '') | string | trim -%}
    {#- Stages of another day (a stale upstream table) would be appended as day D. -#}
    {%- set staged_days = run_query(
        'select distinct cast(as_of_date as text) from ' ~ ref('customer_lifecycle_stage')
    ).columns[0].values() | list -%}
    {%- if staged_days and staged_days != [day] -%}
        {{ exceptions.raise_compiler_error(
            "customer_lifecycle_stage holds " ~ (staged_days | join(', ')) ~ ", not " ~ day
            ~ ": build it for " ~ day ~ " first (select +customer_lifecycle_history)"
        ) }}
    {%- endif -%}
{%- endif -%}

{%- if execute and is_incremental() and not rewind and model.resource_type == 'model' -%}
    {%- set last_built = run_query(
        'select cast(max(valid_to) as text) from ' ~ this
    ).columns[0].values()[0] -%}
    {%- if last_built is not none and last_built >= day -%}
        {%- do exceptions.warn(
            "customer_lifecycle_history already holds the days up to " ~ last_built
            ~ "; building " ~ day ~ " leaves it unchanged (a built day is not rebuilt). "
            ~ "To rebuild from " ~ day ~ ", build it with --vars "
            ~ "'{lifecycle_history_rewind: true}' (drops every day from " ~ day
            ~ " on), then build each later day in order."
        ) -%}
    {%- endif -%}
{%- endif %}

with

stages as (

    select * from {{ ref('customer_lifecycle_stage') }}

),

{% if is_incremental() %}

history as (

    select * from {{ this }}

),

last_built as (

    select max(valid_to) as last_day from history

),

today as (

    -- a day at or before the last one held is not rebuilt: nothing to add
    select stages.*
    from stages
    where stages.as_of_date > coalesce((select last_day from last_built), date '0001-01-01')

),

open_spells as (

    -- the spells a build of D can extend: those ending the day before
    select * from history
    where valid_to = {{ as_of_date() }} - 1

),

{% else %}

today as (

    select * from stages

),

open_spells as (

    select
        customer_id,
        as_of_date as valid_from,
        as_of_date as valid_to,
        stage,
        exponea_stage,
        eligible_phases
    from today
    where false

),

{% endif %}

spells as (

    select
        today.customer_id,
        case
            when
                open_spells.stage = today.stage
                and open_spells.exponea_stage = today.exponea_stage
                and open_spells.eligible_phases = today.eligible_phases
                then open_spells.valid_from
            else today.as_of_date
        end as valid_from,
        today.as_of_date as valid_to,
        today.stage,
        today.exponea_stage,
        today.eligible_phases
    from today
    left join open_spells
        on today.customer_id = open_spells.customer_id

),

final as (

    select
        cast(customer_id as text) as customer_id,
        cast(valid_from as date) as valid_from,
        cast(valid_to as date) as valid_to,
        cast(stage as text) as stage,
        cast(exponea_stage as text) as exponea_stage,
        cast(eligible_phases as text) as eligible_phases,
        cast(valid_to - valid_from + 1 as integer) as days
    from spells

)

select * from final
