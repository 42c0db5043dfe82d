{% test not_null_by_constraint(model, column_name, relation=none) %}
{#-
    The column holds no null because the table declares it NOT NULL: the database refuses a
    null on write. Checked in the catalog, in milliseconds, instead of scanning the table.
    `relation`: a table the application writes that a staging view selects row for row
    (ops.skips grows by ~12M control-group rows a year at a million customers), or (unset)
    the model itself, whose post-hook `set_not_null_columns()` declares every column with
    this test NOT NULL (one scan of the table for all of them, at build time, failing the
    build and naming the column when one holds a null). Fails, naming the table and column,
    when the column is nullable or missing.
-#}
{%- set relation = relation if relation is not none else model -%}

select
    '{{ relation }}' as relation,
    '{{ column_name }}' as column_without_not_null
where not exists (
    select 1
    from pg_catalog.pg_attribute as a
    where
        a.attrelid = '{{ relation }}'::regclass
        and a.attname = '{{ column_name }}'
        and a.attnotnull
        and not a.attisdropped
)

{% endtest %}
