{%- set country_code = var('default_country_code') | string | trim -%}
{%- if not modules.re.match('^[1-9][0-9]{0,2}$', country_code) -%}
    {{ exceptions.raise_compiler_error(
        "var 'default_country_code' must be 1-3 digits without '+', got '" ~ country_code ~ "'"
    ) }}
{%- endif -%}

{#-
    A table, unlike the other staging models: the regular expressions and the time zone lookup
    cost seconds per million customers, and the intermediate models, the marts and a dozen
    tests read it on every build; computed once per build instead of once per reader.

    Incremental: raw.customers is upserted by id and every upsert sets _loaded_at, so a build
    cleans only the customers (re)loaded since the latest _loaded_at it holds (none on most
    days) and replaces their rows. The vars the cleaning reads (club_timezone,
    default_country_code) are kept in _cleaned_with: when they differ from the stored rows',
    every customer is cleaned again, as a full refresh would.
-#}
{#- phone2: the version of the phone rules below (text around the number, national numbers
    without a trunk 0); a change of the rules bumps it, so stored rows are cleaned again as
    after a changed var -#}
{%- set cleaned_with = var('club_timezone') ~ '|' ~ country_code ~ '|phone2' -%}
{%- set batch_filter = none -%}
{%- if is_incremental() and execute and model.resource_type != 'unit_test' -%}
    {%- set stored = run_query(
        "select max(_loaded_at), bool_and(_cleaned_with = '" ~ cleaned_with ~ "') from " ~ this
    ).rows[0] -%}
    {%- if stored[0] is not none and stored[1] -%}
        {%- set batch_filter = "_loaded_at > cast('" ~ stored[0] ~ "' as timestamptz)" -%}
    {%- endif -%}
{%- endif -%}

{{ config(
    materialized='incremental',
    incremental_strategy='delete_insert_where',
    unique_key=['customer_id'],
    on_schema_change='fail',
    post_hook=[
        "{{ set_not_null_columns() }}",
        "{{ ensure_index(this, ['customer_id'], unique=true) }}",
        "analyze {{ this }}",
    ],
) }}

with

source as (

    select * from {{ source('club', 'customers') }}
    {%- if batch_filter %}
    where {{ batch_filter }}
    {%- endif %}

),

time_zones as (

    -- known IANA names, keyed case-insensitively; the canonical spelling wins
    select distinct on (lower(name))
        lower(name) as name_key,
        name
    from pg_catalog.pg_timezone_names
    order by lower(name), name

),

cleaned as (

    select
        customer_id,
        nullif(trim(club_id), '') as club_id,
        nullif(trim(first_name), '') as first_name,
        nullif(lower(trim(email)), '') as email,
        phone as phone_raw,
        -- what surrounds the number goes (tel:, "(mob)", a trailing dot: from the first + or
        -- digit to the last digit); so do the separators people type (spaces, dashes, dots,
        -- parentheses) and the national trunk 0 some write after the country code:
        -- +44 (0)20 ..., 00 44 (0)20 ... Python's phone normalisation (phonenumbers, in
        -- lifecycle.delivery.webhooks.events) agrees: tests/reliability/test_phone_parity.py.
        nullif(
            regexp_replace(
                regexp_replace(
                    coalesce(substring(trim(phone) from '[+0-9].*[0-9]'), trim(phone)),
                    '^(\+|00)[[:space:]]*([0-9]{1,3})[[:space:]]*\(0\)', '\1\2'
                ),
                '[[:space:]().-]', '', 'g'
            ),
            ''
        ) as phone_digits,
        nullif(trim(timezone), '') as timezone_raw,
        created_at,
        _loaded_at
    from source

),

phone_normalised as (

    select
        *,
        case
            when phone_digits ~ '^00[0-9]+$' then '+' || substr(phone_digits, 3)
            -- a national number: trunk prefix 0 replaced by the club's country code
            when phone_digits ~ '^0[0-9]+$' then '+{{ country_code }}' || substr(phone_digits, 2)
            -- digits only: the country code and the number when it starts with the club's
            -- country code (380671234567), else a national number without its trunk 0 (a
            -- spreadsheet dropped it: 671234567; or a region without one, Poland's 601234567)
            -- when it is long enough to be one; shorter is left invalid (12345 -> +12345)
            when phone_digits ~ '^{{ country_code }}[0-9]+$' then '+' || phone_digits
            when phone_digits ~ '^[0-9]{8,}$' then '+{{ country_code }}' || phone_digits
            when phone_digits ~ '^[0-9]+$' then '+' || phone_digits
            -- already international, or not a number: left for phone_valid to judge
            else phone_digits
        end as phone
    from cleaned

),

timezone_resolved as (

    select
        phone_normalised.*,
        -- empty or unknown to PostgreSQL: the club's time zone
        coalesce(time_zones.name, '{{ var("club_timezone") }}') as timezone
    from phone_normalised
    left join time_zones
        on lower(phone_normalised.timezone_raw) = time_zones.name_key

),

final as (

    select
        customer_id,
        coalesce(club_id, 'main') as club_id,
        first_name,
        email,
        -- dot-separated local part @ dot-separated host labels, a letters-only TLD
        coalesce(
            email ~ (
                '^[a-z0-9!#$%&''*+/=?^_`{|}~-]+(\.[a-z0-9!#$%&''*+/=?^_`{|}~-]+)*@'
                || '[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*\.[a-z]{2,}$'
            ),
            false
        ) as email_valid,
        phone_raw,
        phone,
        coalesce(phone ~ '^\+[1-9][0-9]{7,14}$', false) as phone_valid,
        timezone_raw,
        timezone,
        created_at,
        {{ local_date('created_at', 'timezone') }} as customer_since,
        -- when the row was last (re)loaded: a changed time zone moves local visit dates
        _loaded_at,
        cast('{{ cleaned_with }}' as text) as _cleaned_with
    from timezone_resolved

)

select * from final
