{% macro lifecycle_phases() -%}
    {#-
        var lifecycle_phases as a mapping: the enabled phases of the rules file in use, each
        step's audience compiled to SQL over customer_facts (lifecycle.transform.dbt_vars,
        docs/architecture.md #1). Nothing in this project holds a copy of it: every run through
        lifecycle (the CLI, the DAG, lifecycle.transform.dbt.run_dbt) passes the rules file's,
        and a unit test pins the phases it tests in its own `overrides: vars:`. Accepts the JSON
        string the generator writes or, in a unit test, the same value as a YAML mapping.
        While dbt parses the project (`execute` false) a missing var reads as no phases.
    -#}
    {%- set value = var('lifecycle_phases', none) -%}
    {%- if value is none -%}
        {%- if execute -%}
            {{ exceptions.raise_compiler_error(
                "var 'lifecycle_phases' is not set: it comes from the rules file. Run dbt through "
                ~ "lifecycle (`lifecycle run`, the DAG), or for an ad-hoc run pass "
                ~ "--vars \"$(python -m lifecycle.transform.dbt_vars --as-of-date YYYY-MM-DD)\""
            ) }}
        {%- endif -%}
        {{ return({'phases': []}) }}
    {%- endif -%}
    {%- set config = fromjson(value) if value is string else value -%}
    {%- if config is none or config is not mapping or 'phases' not in config -%}
        {{ exceptions.raise_compiler_error(
            "var 'lifecycle_phases' is not the JSON lifecycle.transform.dbt_vars.phase_vars "
            ~ "generates, got: " ~ (value | string)[:200]
        ) }}
    {%- endif -%}
    {{ return(config) }}
{%- endmacro %}
