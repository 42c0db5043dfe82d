{% macro postgres__persist_docs(relation, model, for_relation, for_columns) -%}
    {#-
        dbt's persist_docs (+persist_docs in dbt_project.yml: the yml descriptions as comments
        on each table or view and its columns) in one statement sent once. dbt-postgres' own
        looks up the relation's columns twice first (two queries on information_schema.columns,
        each with a Jinja context of its own: a quarter of a model's time in a day's build, where
        a table or view is created anew each day) to comment only on columns that exist. Here
        the database picks them: a documented column the relation lacks gets no comment, as in
        dbt's, and no warning (tests/dbt checks that every documented column is built).
    -#}
    {%- set sql = [] -%}
    {%- if for_relation and config.persist_relation_docs() and model.description -%}
        {%- do sql.append(alter_relation_comment(relation, model.description)) -%}
    {%- endif -%}
    {%- if for_columns and config.persist_column_docs() and model.columns -%}
        {%- set documented = [] -%}
        {%- for name, column in model.columns.items() if column.description -%}
            {%- do documented.append("(" ~ dbt.string_literal(name if column.quote else name | lower)
                                     ~ ", " ~ postgres_escape_comment(column.description) ~ ")") -%}
        {%- endfor -%}
        {%- if documented -%}
            {%- do sql.append(persist_column_docs_sql(relation, documented)) -%}
        {%- endif -%}
    {%- endif -%}
    {%- if sql -%}
        {%- do run_query(sql | join("\n")) -%}
    {%- endif -%}
{%- endmacro %}


{% macro persist_column_docs_sql(relation, documented) -%}
do $persist_docs$
declare
    c record;
begin
    for c in
        select d.name, d.comment
        from (values {{ documented | join(", ") }}) as d (name, comment)
        inner join pg_catalog.pg_attribute as a
            on
                a.attrelid = '{{ relation }}'::regclass
                and a.attname = d.name
                and a.attnum > 0
                and not a.attisdropped
    loop
        execute format('comment on column %s.%I is %L', '{{ relation }}', c.name, c.comment);
    end loop;
end
$persist_docs$;
{%- endmacro %}
