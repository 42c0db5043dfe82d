{% macro as_of_date() -%}
    {#-
        The run's as-of date D as a SQL date literal, from var('as_of_date') (YYYY-MM-DD).
        Required: without it a model that needs D fails to compile rather than use a made-up
        day. At parse time vars may be absent, so the check only runs when executing.
    -#}
    {%- set value = var('as_of_date', none) -%}
    {%- if not execute -%}
        cast('1970-01-01' as date)
    {%- else -%}
        {%- if value is none or (value | string | trim) == '' -%}
            {{ exceptions.raise_compiler_error(
                "var 'as_of_date' is required to build " ~ model.name ~ ": pass it as "
                ~ "--vars '{\"as_of_date\": \"YYYY-MM-DD\"}' (lifecycle.transform.dbt.build does this)"
            ) }}
        {%- endif -%}
        {%- set text = value | string | trim -%}
        {%- if not modules.re.match('^[0-9]{4}-[0-9]{2}-[0-9]{2}$', text) -%}
            {{ exceptions.raise_compiler_error(
                "var 'as_of_date' must be a date written YYYY-MM-DD, got '" ~ text ~ "'"
            ) }}
        {%- endif -%}
        {%- set year, month, day = text.split('-') | map('int') | list -%}
        {%- set month_ok = 1 <= month <= 12 -%}
        {%- if month_ok -%}
            {%- set next_month = modules.datetime.date(year + month // 12, month % 12 + 1, 1) -%}
            {%- set month_days = (next_month - modules.datetime.timedelta(days=1)).day -%}
        {%- endif -%}
        {%- if year < 1 or not month_ok or not (1 <= day <= month_days) -%}
            {{ exceptions.raise_compiler_error(
                "var 'as_of_date' is not a calendar date: '" ~ text ~ "'"
            ) }}
        {%- endif -%}
        cast('{{ text }}' as date)
    {%- endif -%}
{%- endmacro %}
