{% macro derived_state(as_of_column='derived_as_of', loaded_column='_loaded_at') -%}
    {#-
        The stored state an incremental model that derives its rows as of D starts from, as
        SQL expressions: `last_derived`, the latest as-of date it holds (L); `watermark`, the
        latest `loaded_column` it holds ('-infinity' when none); `rewinding`, whether this
        build goes back (D < L). Read before the run when the table holds rows, so the planner
        sees constants; otherwise (first rows, or a unit test, which has no table to read)
        they stay subqueries over `this`.
    -#}
    {%- set last_derived = "(select max(" ~ as_of_column ~ ") from " ~ this ~ ")" -%}
    {%- set state = {
        'last_derived': last_derived,
        'watermark': "(select coalesce(max(" ~ loaded_column ~ "), '-infinity') from "
            ~ this ~ ")",
        'rewinding': "(" ~ as_of_date() ~ " < " ~ last_derived ~ ")",
    } -%}
    {%- if is_incremental() and execute and model.resource_type != 'unit_test' -%}
        {%- set stored = run_query(
            "select cast(max(" ~ as_of_column ~ ") as text), cast(max(" ~ loaded_column
            ~ ") as text) from " ~ this
        ).rows[0] -%}
        {%- if stored[0] is not none -%}
            {%- do state.update({
                'last_derived': "cast('" ~ stored[0] ~ "' as date)",
                'watermark': "cast('" ~ (stored[1] or '-infinity') ~ "' as timestamptz)",
                'rewinding': 'true' if var('as_of_date') | string < stored[0] else 'false',
            }) -%}
        {%- endif -%}
    {%- endif -%}
    {{ return(state) }}
{%- endmacro %}
