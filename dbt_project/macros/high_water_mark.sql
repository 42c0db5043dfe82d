{% macro high_water_mark(column='_loaded_at') -%}
    {#-
        The latest `column` (a timestamptz) the incremental model being built holds: the
        high-water mark its batch starts after; '-infinity' while it holds none. Read before
        the run when the table exists, so the planner sees a constant and expects the handful
        of new rows an index finds rather than a third of the table. A unit test has no table
        to read: there it stays a subquery over the `this` fixture.
    -#}
    {%- if is_incremental() and execute and model.resource_type != 'unit_test' -%}
        {%- set latest = run_query('select max(' ~ column ~ ') from ' ~ this).columns[0][0] -%}
        cast('{{ "-infinity" if latest is none else latest }}' as timestamptz)
    {%- else -%}
        (select coalesce(max({{ column }}), '-infinity') from {{ this }})
    {%- endif -%}
{%- endmacro %}
