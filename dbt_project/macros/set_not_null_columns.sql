{% macro set_not_null_columns() -%}
    {#-
        SQL for a post-hook: declare NOT NULL every column of this model that has a
        `not_null_by_constraint` test without a `relation` (the yml's list of the model's
        not-null columns, written once). One ALTER TABLE checks all of them in one scan of
        the table, where a `not_null` test per column would scan it once each; a null fails
        the build with PostgreSQL's message naming the column ("column "x" of relation "y"
        contains null values") and, for a table, the previous table stays. Columns already
        NOT NULL (a contract's, an incremental table's after its first build) cost nothing.
        Empty when the model has no such test.
    -#}
    {%- set columns = [] -%}
    {%- if execute -%}
        {%- for node in graph.nodes.values() -%}
            {%- set test = node.get('test_metadata') or {} -%}
            {%- if node.resource_type == 'test'
                and node.get('attached_node') == model.unique_id
                and test.get('name') == 'not_null_by_constraint'
                and test.get('kwargs', {}).get('relation') is none -%}
                {%- do columns.append(node.column_name) -%}
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
