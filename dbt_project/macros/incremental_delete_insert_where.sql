{% macro get_incremental_delete_insert_where_sql(arg_dict) %}
    {#-
        Incremental strategy 'delete_insert_where': delete the target's rows whose unique_key
        matches a row of the new batch, then insert the batch's rows that satisfy the config
        `insert_where` (a SQL condition on the batch; all rows when unset). A batch row that
        fails it deletes its key and writes nothing: the way a model retracts a row.

        dbt's delete+insert does neither, and leaves the batch (a temporary table) without
        statistics: the planner may then scan the whole target instead of probing its index.
    -#}
    {%- set target = arg_dict['target_relation'] -%}
    {%- set source = arg_dict['temp_relation'] -%}
    {%- set keys = arg_dict['unique_key'] -%}
    {%- set keys = [keys] if keys is string else keys -%}
    {%- if not keys -%}
        {{ exceptions.raise_compiler_error(
            "incremental_strategy 'delete_insert_where' needs a unique_key") }}
    {%- endif -%}
    {%- set insert_where = config.get('insert_where') -%}
    {%- set dest_cols_csv = get_quoted_csv(arg_dict['dest_columns'] | map(attribute='name')) -%}

    analyze {{ source }};

    delete from {{ target }} as dbt_internal_dest
    using {{ source }} as dbt_internal_batch
    where
        {%- for key in keys %}
        {% if not loop.first %}and {% endif -%}
        dbt_internal_dest.{{ key }} = dbt_internal_batch.{{ key }}
        {%- endfor %};

    insert into {{ target }} ({{ dest_cols_csv }})
    select {{ dest_cols_csv }}
    from {{ source }}
    {%- if insert_where %}
    where {{ insert_where }}
    {%- endif %}

{% endmacro %}
