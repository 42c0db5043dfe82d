{% test unique_by_constraint(model, relation, columns) %}
{#-
    For a staging view that selects `relation` (a table the application writes) row for row:
    the columns are unique in the model when `relation` has a unique, non-partial index on
    exactly those columns, since the database then refuses a duplicate on write. Checked in
    the catalog, in milliseconds, instead of grouping the whole message history each day
    (~20 s for a year of control-group skips at a million customers). Fails, naming the table
    and columns, when no such index exists.
-#}
{%- set wanted = columns | sort -%}

select
    '{{ relation }}' as relation,
    '{{ wanted | join(", ") }}' as columns_without_unique_index
where not exists (
    select 1
    from pg_catalog.pg_index as i
    where
        i.indrelid = '{{ relation }}'::regclass
        and i.indisunique
        and i.indpred is null
        and i.indexprs is null
        and {{ index_key_columns('i', by_name=true) }} = array[{% for c in wanted %}'{{ c }}'{% if not loop.last %}, {% endif %}{% endfor %}]::text []
)

{% endtest %}
