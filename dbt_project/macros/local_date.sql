{% macro local_date(timestamp_column, timezone_column) -%}
    {#- The calendar date of a timestamptz as seen in an IANA time zone. -#}
    cast(({{ timestamp_column }} at time zone {{ timezone_column }}) as date)
{%- endmacro %}

{% macro local_day_start(date_expression, timezone_column) -%}
    {#- The instant (timestamptz) a calendar date begins in an IANA time zone. -#}
    (cast({{ date_expression }} as timestamp) at time zone {{ timezone_column }})
{%- endmacro %}
