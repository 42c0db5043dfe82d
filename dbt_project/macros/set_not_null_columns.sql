{% macro set_not_null_columns() -%}
    {#-
        SQL for the post-hook every model gets (dbt_project.yml): declare NOT NULL, in the
        table itself, the columns its `checks` test lists under `not_null` (the yml's list of
        the model's not-null columns, written once). One ALTER TABLE checks all of them in one scan
        of a new table; an incremental table's columns are NOT NULL from its first build on, so
        later builds cost nothing and an insert of a null fails naming the column. A null fails
        the model's build with PostgreSQL's message ("column "x" of relation "y" contains null
        values"), inside the build's transaction: the table stays as it was. The test then
        reads the catalog, in milliseconds, instead of scanning the table each day. Empty for a
        view (nothing to declare: its test scans) and for a model without the test.
    -#}
    {%- set columns = [] -%}
    {%- if execute and model.config.materialized in ('table', 'incremental') -%}
        {%- for node in graph.nodes.values() -%}
            {%- set test = node.get('test_metadata') or {} -%}
            {%- if node.resource_type == 'test'
                and node.get('attached_node') == model.unique_id
                and test.get('name') == 'checks' -%}
                {%- do columns.extend(test.get('kwargs', {}).get('not_null') or []) -%}
            {%- endif -%}
        {%- endfor -%}
    {%- endif -%}
    {%- if columns -%}
        alter table {{ this }}
        {%- for column in columns | unique | sort %}
            alter column {{ adapter.quote(column) }} set not null{{ ',' if not loop.last }}
        {%- endfor %}
    {%- endif -%}
{%- endmacro %}
