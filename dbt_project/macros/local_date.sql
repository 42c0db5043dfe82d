{% macro local_date(timestamp_column, timezone_column) -%}
    {#- The calendar date of a timestamptz as seen in an IANA time zone. -#}
    cast(({{ timestamp_column }} at time zone {{ timezone_column }}) as date)
{%- endmacro %}
