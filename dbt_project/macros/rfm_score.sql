{% macro rfm_score(buyers, metric, scored_total) -%}
    {#-
        A select of one row per distinct value of `metric` among `buyers`: metric, score 1..5.
        `scored_total` is a relation of one row: scored_total, the number of buyers that set
        the boundaries, and by_repeat_buyers, whether those are the buyers with two or more
        purchases (lifetime_purchases >= 2) or, without any such buyer, all of them. A value's position is one plus the number of scored buyers with a
        smaller value (for a value only unscored buyers hold: the next scored value's first
        position, at most scored_total); its group g is the ntile(5) group of that position
        (macros/ntile_of_rank.sql), so customers tied on a value share a group. The score is
        g, but at most one above the score of the next lower scored value: with k the value's
        rank among the distinct scored values (1 + how many lie below), score = k + the
        least g - k over the values up to this one. So a large tie that spans a quintile
        boundary cannot leave a score empty while there are distinct values to fill it.
    -#}
    {%- set scored = "(" ~ buyers ~ ".lifetime_purchases >= 2 or not totals.by_repeat_buyers)" %}
    select
        metric,
        cast(rank_k + min(grp - rank_k) over (order by metric rows unbounded preceding)
            as integer) as score
    from (
        select
            metric,
            {{ ntile_of_rank('least(first_position, total)', 'total', 5) }} as grp,
            rank_k
        from (
            select
                {{ metric }} as metric,
                -- bigint: the ntile arithmetic divides integers (a window sum is numeric)
                cast(sum(count(*) filter (where {{ scored }})) over (order by {{ metric }})
                    - count(*) filter (where {{ scored }}) + 1 as bigint) as first_position,
                cast(sum(case when bool_or({{ scored }}) then 1 else 0 end)
                    over (order by {{ metric }})
                    - case when bool_or({{ scored }}) then 1 else 0 end + 1 as bigint) as rank_k,
                cast(max(totals.scored_total) as bigint) as total
            from {{ buyers }}
            cross join {{ scored_total }} as totals
            group by {{ metric }}
        ) as positions
    ) as grouped
{%- endmacro %}
