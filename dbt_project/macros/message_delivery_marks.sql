{% macro message_delivery_holds_marks(relation) -%}
    {#- Whether an existing message_delivery table has the columns its incremental builds
        start after (_outbox_updated_at, _events_received_at). A table built before they
        existed is emptied and computed again in full (model message_delivery). -#}
    {%- set names = adapter.get_columns_in_relation(relation) | map(attribute='name')
        | map('lower') | list -%}
    {{ return('_outbox_updated_at' in names and '_events_received_at' in names) }}
{%- endmacro %}
