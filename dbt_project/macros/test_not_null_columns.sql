{% test not_null_columns(model, columns) %}
{#-
    None of `columns` holds a null: dbt's not_null for several columns of one model, in one
    test. A model declares one of these instead of a not_null test per column: each test is a
    node of the day's build with its own compile, connection and query (77 not_null tests were
    about a quarter of a 10k-customer day's dbt build, and one full scan each at a million
    customers).

    A column the database declares NOT NULL (a contract's, or set by the post-hook
    set_not_null_columns) cannot hold one: it is checked in the catalog, in milliseconds. The
    others are counted in one scan of the model. Fails with a row per column that holds nulls
    (the column, how many rows; the test's name lists the columns) and errors on a column the
    model lacks.
-#}
{%- if columns is string or columns | length == 0 -%}
    {{ exceptions.raise_compiler_error("not_null_columns on " ~ model ~ ": `columns` must be a non-empty list of column names, got " ~ columns) }}
{%- endif -%}
{%- set declared = [] -%}
{%- if execute -%}
    {%- set catalog -%}
        select a.attname
        from pg_catalog.pg_attribute as a
        where
            a.attrelid = to_regclass('{{ model }}')
            and a.attnotnull
            and not a.attisdropped
            and a.attname in ({% for c in columns %}{{ dbt.string_literal(c) }}{{ ", " if not loop.last }}{% endfor %})
    {%- endset -%}
    {%- set declared = run_query(catalog).columns[0].values() | list -%}
{%- endif -%}
{%- set scanned = columns | reject("in", declared) | list %}

{% if scanned -%}
select v.column_name, v.null_rows
from (
    select
        {%- for c in scanned %}
        count(*) filter (where {{ c }} is null) as {{ adapter.quote(c) }}{{ "," if not loop.last }}
        {%- endfor %}
    from {{ model }}
) as counts
cross join lateral (
    values
        {%- for c in scanned %}
        ({{ dbt.string_literal(c) }}, counts.{{ adapter.quote(c) }}){{ "," if not loop.last }}
        {%- endfor %}
) as v (column_name, null_rows)
where v.null_rows > 0
{%- else -%}
-- every column is declared NOT NULL in the catalog: {{ declared | join(", ") }}
select null::text as column_name, 0::bigint as null_rows
where false
{%- endif %}

{% endtest %}
