{% test expression_is_true(model, expression) %}
{#- Fails with the rows for which the boolean SQL expression is not true. -#}

select *
from {{ model }}
where not coalesce(({{ expression }}), false)

{% endtest %}
