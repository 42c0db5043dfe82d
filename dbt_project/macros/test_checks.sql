{% test checks(model, not_null=[], accepted_values={}, expressions={}, unique=[],
                constraints_of=none, not_null_by_constraint=[], unique_by_constraint=[]) %}
{#-
    A model's data checks in one test: one node of the day's build, one query. Every test is a
    node with its own compile, connection and query (~15 ms of dbt's Python each, and dbt's
    threads share one interpreter): 95 separate tests were 1.4 s of a 10,000-customer day's
    3.9 s dbt build. Returns a row per check that fails (check, failing_rows); no row passes.

    - not_null: columns that hold no null. A column the database declares NOT NULL (a
      contract's, or set by the post-hook set_not_null_columns from this list) cannot hold one:
      it is checked in the catalog; the others are counted in the model's scan.
    - accepted_values: {column: [values]}: every non-null value of the column is one of them.
    - expressions: {name: boolean SQL}: true for every row (a null counts as false).
    - unique: [[columns], ...]: no combination occurs twice (grouped over the whole model).
    - constraints_of: the relation whose catalog holds the constraints below (default the
      model): a table the application writes that a staging view selects row for row.
    - not_null_by_constraint: columns that relation declares NOT NULL, so the database refuses
      a null on write; fails, naming it, when one is nullable or missing.
    - unique_by_constraint: [[columns], ...] with a unique, non-partial index on exactly those
      columns in that relation (a post-hook builds it on a model's own table, failing on a
      duplicate); fails when there is none. Checked in milliseconds instead of grouping, e.g.,
      a year of control-group skips each day (~20 s at a million customers).
    The rows scanned once: the not-null columns not declared, accepted values, expressions.
-#}
{%- for name, arg in [("not_null", not_null), ("not_null_by_constraint", not_null_by_constraint)] -%}
    {%- if arg is string or arg is mapping -%}
        {{ exceptions.raise_compiler_error("checks on " ~ model ~ ": `" ~ name ~ "` must be a list of column names, got " ~ arg) }}
    {%- endif -%}
{%- endfor -%}
{%- for name, arg in [("unique", unique), ("unique_by_constraint", unique_by_constraint)] -%}
    {%- for columns in arg if columns is string or columns is mapping -%}
        {{ exceptions.raise_compiler_error("checks on " ~ model ~ ": `" ~ name ~ "` must be a list of column lists, e.g. [[customer_id, service]], got " ~ arg) }}
    {%- endfor -%}
{%- endfor -%}
{%- for name, arg in [("accepted_values", accepted_values), ("expressions", expressions)] -%}
    {%- if arg is not mapping -%}
        {{ exceptions.raise_compiler_error("checks on " ~ model ~ ": `" ~ name ~ "` must be a mapping (" ~ ("column: [values]" if name == "accepted_values" else "name: boolean SQL") ~ "), got " ~ arg) }}
    {%- endif -%}
{%- endfor -%}
{%- set owner = constraints_of if constraints_of is not none else model -%}
{%- set declared = [] -%}
{%- if execute and not_null -%}
    {%- set catalog -%}
        select a.attname
        from pg_catalog.pg_attribute as a
        where
            a.attrelid = to_regclass('{{ model }}')
            and a.attnotnull
            and not a.attisdropped
            and a.attname in ({% for c in not_null %}{{ dbt.string_literal(c) }}{{ ", " if not loop.last }}{% endfor %})
    {%- endset -%}
    {%- set declared = run_query(catalog).columns[0].values() | list -%}
{%- endif -%}
{%- set scanned = [] -%}
{%- for c in not_null | reject("in", declared) -%}
    {%- do scanned.append(("not_null " ~ c, c ~ " is null")) -%}
{%- endfor -%}
{%- for column, values in accepted_values.items() -%}
    {%- set literals = [] -%}
    {%- for v in values -%}{%- do literals.append(dbt.string_literal(v | string)) -%}{%- endfor -%}
    {%- do scanned.append(("accepted_values " ~ column,
        "cast(" ~ column ~ " as text) not in (" ~ literals | join(", ") ~ ")")) -%}
{%- endfor -%}
{%- for name, expression in expressions.items() -%}
    {%- do scanned.append(("expression " ~ name, "not coalesce((" ~ expression ~ "), false)")) -%}
{%- endfor -%}
{%- set parts = [] -%}
{%- if scanned -%}
    {%- set part -%}
select v.check_name, v.failing_rows
from (
    select
        {%- for label, condition in scanned %}
        count(*) filter (where {{ condition }}) as check_{{ loop.index }}{{ "," if not loop.last }}
        {%- endfor %}
    from {{ model }}
) as counts
cross join lateral (
    values
        {%- for label, condition in scanned %}
        ({{ dbt.string_literal(label) }}, counts.check_{{ loop.index }}){{ "," if not loop.last }}
        {%- endfor %}
) as v (check_name, failing_rows)
    {%- endset -%}
    {%- do parts.append(part) -%}
{%- endif -%}
{%- for columns in unique -%}
    {%- set part -%}
select {{ dbt.string_literal("unique " ~ columns | join(", ")) }} as check_name, count(*) as failing_rows
from (
    select 1
    from {{ model }}
    group by {{ columns | join(", ") }}
    having count(*) > 1
) as duplicated
    {%- endset -%}
    {%- do parts.append(part) -%}
{%- endfor -%}
{%- for c in not_null_by_constraint -%}
    {%- set part -%}
select {{ dbt.string_literal("not_null_by_constraint " ~ owner ~ "." ~ c) }} as check_name,
    cast(not exists (
        select 1
        from pg_catalog.pg_attribute as a
        where
            a.attrelid = '{{ owner }}'::regclass
            and a.attname = {{ dbt.string_literal(c) }}
            and a.attnotnull
            and not a.attisdropped
    ) as integer) as failing_rows
    {%- endset -%}
    {%- do parts.append(part) -%}
{%- endfor -%}
{%- for columns in unique_by_constraint -%}
    {%- set wanted = columns | sort -%}
    {%- set part -%}
select {{ dbt.string_literal("unique_by_constraint " ~ owner ~ " (" ~ wanted | join(", ") ~ ")") }} as check_name,
    cast(not exists (
        select 1
        from pg_catalog.pg_index as i
        where
            i.indrelid = '{{ owner }}'::regclass
            and i.indisunique
            and i.indpred is null
            and i.indexprs is null
            and {{ index_key_columns('i', by_name=true) }} = array[{% for c in wanted %}{{ dbt.string_literal(c) }}{{ ", " if not loop.last }}{% endfor %}]::text []
    ) as integer) as failing_rows
    {%- endset -%}
    {%- do parts.append(part) -%}
{%- endfor %}

{% if parts -%}
select check_name, failing_rows
from (
{%- for part in parts %}
{{ part }}
{{ "union all" if not loop.last }}
{%- endfor %}
) as checked
where failing_rows > 0
{%- else -%}
-- every not-null column is declared NOT NULL in the catalog: {{ declared | join(", ") }}
select null::text as check_name, 0::bigint as failing_rows
where false
{%- endif %}

{% endtest %}
