{% macro rfm_segment(r_score, f_score, lifetime_purchases, has_contact) -%}
    {#-
        The RFM segment, one of Exponea's 14: the 11 classic R/F segments (M does not move
        the segment), whose low-low corner is split into hibernating (R 2) and lost (R 1),
        and before the grid: loyal_guest (no purchase, a usable contact: `has_contact`),
        guest (no purchase, no contact) and first_time_buyer (exactly one purchase).

            R \ F |  1               2                    3                    4          5
            ------+-------------------------------------------------------------------------------
              5   |  recent          potential_loyalists  potential_loyalists  champions  champions
              4   |  promising       potential_loyalists  potential_loyalists  loyal      loyal
              3   |  about_to_sleep  about_to_sleep       need_attention       loyal      loyal
              2   |  hibernating     hibernating          at_risk              at_risk    cant_lose_them
              1   |  lost            lost                 at_risk              at_risk    cant_lose_them
    -#}
    case
        when coalesce({{ lifetime_purchases }}, 0) = 0 and coalesce({{ has_contact }}, false)
            then 'loyal_guest'
        when coalesce({{ lifetime_purchases }}, 0) = 0 then 'guest'
        when {{ lifetime_purchases }} = 1 then 'first_time_buyer'
        when {{ r_score }} = 5 and {{ f_score }} >= 4 then 'champions'
        when {{ r_score }} = 5 and {{ f_score }} = 1 then 'recent'
        when {{ r_score }} = 4 and {{ f_score }} = 1 then 'promising'
        when {{ r_score }} >= 4 and {{ f_score }} <= 3 then 'potential_loyalists'
        when {{ r_score }} >= 3 and {{ f_score }} >= 4 then 'loyal'
        when {{ r_score }} = 3 and {{ f_score }} = 3 then 'need_attention'
        when {{ r_score }} = 3 then 'about_to_sleep'
        when {{ f_score }} = 5 then 'cant_lose_them'
        when {{ f_score }} >= 3 then 'at_risk'
        when {{ r_score }} = 2 then 'hibernating'
        else 'lost'
    end
{%- endmacro %}

{% macro exponea_stage(rfm_segment) -%}
    {#-
        Exponea's five lifecycle stages from the RFM segment: acquire the guests (a first
        purchase), retain the new buyers (a second one), grow the value of the promising
        regulars, cherish the best, reactivate those slipping away or gone.
    -#}
    case
        when {{ rfm_segment }} in ('guest', 'loyal_guest') then 'acquire'
        when {{ rfm_segment }} in ('first_time_buyer', 'recent', 'promising') then 'retain'
        when {{ rfm_segment }} in ('potential_loyalists', 'need_attention') then 'grow_value'
        when {{ rfm_segment }} in ('champions', 'loyal') then 'cherish'
        else 'reactivate'
    end
{%- endmacro %}
