{% macro lifecycle_setting(section, key) -%}
    {#-
        One threshold of the rules file's policy, from var lifecycle_phases (the generator puts
        policy.next_best_offer and policy.send_time's lookback_weeks beside the phases). A var
        without the section (a unit test that pins phases only) reads the policy's defaults,
        the same as lifecycle.rules.models.
    -#}
    {%- set defaults = {
        'next_best_offer': {
            'regular_min_visits_30d': 4,
            'tenure_band_days': 180,
            'visits_band_30d': 4,
            'min_lookalikes': 5,
            'min_share': 0.1,
        },
        'send_time': {'lookback_weeks': 8},
    } -%}
    {%- set config = lifecycle_phases() -%}
    {%- set given = config.get(section) or {} -%}
    {%- set value = given.get(key, defaults[section][key]) -%}
    {%- if value is none or value is string or value is mapping -%}
        {{ exceptions.raise_compiler_error(
            "var 'lifecycle_phases': " ~ section ~ "." ~ key ~ " must be a number, got "
            ~ (value | string)[:40]
        ) }}
    {%- endif -%}
    {{ return(value) }}
{%- endmacro %}
