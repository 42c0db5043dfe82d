{% test every_value_present(model, column_name, values) %}
{#- The inverse of accepted_values: fails with each of `values` that no row of the column
    holds (one row per missing value). -#}

select expected.value as missing_value
from (
    {%- for value in values %}
    select cast('{{ value }}' as text) as value{% if not loop.last %} union all{% endif %}
    {%- endfor %}
) as expected
where not exists (
    select 1 from {{ model }} as held
    where cast(held.{{ column_name }} as text) = expected.value
)

{% endtest %}
