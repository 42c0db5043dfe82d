{% macro ensure_index(relation, columns, unique=false, include=[], where=none) -%}
    {#-
        SQL for a post-hook: create an index on `columns` of `relation` (optionally unique,
        with `include` columns, partial on the condition `where`) unless one with exactly these
        key columns, uniqueness and partiality exists already: an incremental run keeps the
        table and its indexes. The index is unnamed so PostgreSQL picks a free name: while a
        full refresh swaps tables, the old copy still holds its indexes' names until the end.
    -#}
    {%- set ddl -%}
        create {% if unique %}unique {% endif %}index on {{ relation }} ({{ columns | join(', ') }})
        {%- if include %} include ({{ include | join(', ') }}){% endif %}
        {%- if where %} where {{ where }}{% endif %}
    {%- endset -%}
    do $ensure_index$
    begin
        if not exists (
            select 1
            from pg_catalog.pg_index as i
            where
                i.indrelid = '{{ relation }}'::regclass
                and i.indisunique = {{ 'true' if unique else 'false' }}
                and (i.indpred is not null) = {{ 'true' if where else 'false' }}
                and {{ index_key_columns('i') }} = array[{% for c in columns %}'{{ c }}'{% if not loop.last %}, {% endif %}{% endfor %}]::text []
        ) then
            execute $ddl${{ ddl }}$ddl$;
        end if;
    end
    $ensure_index$
{%- endmacro %}


{% macro index_key_columns(index, by_name=false) -%}
    {#- SQL: the key columns (not the included ones) of the pg_index row `index`, as a text
        array in key order, or sorted by name when by_name. -#}
    (
        select array_agg(a.attname::text order by {{ 'a.attname::text' if by_name else 'k.ord' }})
        from unnest(string_to_array({{ index }}.indkey::text, ' ')::int2 []) with ordinality
            as k (attnum, ord)
        inner join pg_catalog.pg_attribute as a
            on a.attrelid = {{ index }}.indrelid and a.attnum = k.attnum
        where k.ord <= {{ index }}.indnkeyatts
    )
{%- endmacro %}
