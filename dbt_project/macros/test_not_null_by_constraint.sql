{% test not_null_by_constraint(model, column_name, relation) %}
{#-
    For a staging view that selects `relation` (a table the application writes) row for row,
    the column under the same name: it holds no null when `relation` declares the column
    NOT NULL, since the database then refuses a null on write. Checked in the catalog, in
    milliseconds, instead of scanning the whole message history each day (ops.skips grows by
    ~12M control-group rows a year at a million customers). Fails, naming the table and
    column, when the column is nullable or missing.
-#}

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
