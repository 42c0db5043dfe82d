{% macro ntile_of_rank(position, total, buckets) -%}
    {#-
        The ntile(buckets) group that row number `position` (1-based) of `total` rows falls
        into, as PostgreSQL's ntile() splits them: total / buckets rows per group, the first
        total % buckets groups one row more. Given rank() as the position, every row of a tie
        gets the group of the tie's first row, so equal values never land in different groups.
    -#}
    case
        when ({{ position }}) <= (({{ total }}) % {{ buckets }}) * (({{ total }}) / {{ buckets }} + 1)
            then (({{ position }}) - 1) / (({{ total }}) / {{ buckets }} + 1) + 1
        else ({{ total }}) % {{ buckets }}
            + (({{ position }}) - 1 - (({{ total }}) % {{ buckets }}) * (({{ total }}) / {{ buckets }} + 1))
            / (({{ total }}) / {{ buckets }}) + 1
    end
{%- endmacro %}
