{#-
    The phase steps each customer is eligible for on D, by the rules file's own conditions:
    var lifecycle_phases is generated from the validated rules in use (macro lifecycle_phases,
    docs/architecture.md #1), each step's condition our compiler's SQL over customer_facts columns. Names and
    numbers are checked here too, so a hand-passed var cannot smuggle text into them.
-#}
{%- set phase_config = lifecycle_phases() -%}
{#- Relations a condition may read besides customer_facts (bought_service), as ref()s: the
    generator leaves a marker for each (lifecycle.transform.dbt_vars.REF_MARKER). The ref is taken
    whether or not the rules use it, so dbt always builds it first. -#}
{%- set relations = {
    '__lifecycle_ref__customer_service_purchases__': ref('customer_service_purchases'),
} -%}
{%- set selects = [] -%}
{%- for phase in phase_config['phases'] -%}
    {%- if not modules.re.match('^[a-z_]+$', phase['name'] | string)
        or phase['priority'] is not number -%}
        {{ exceptions.raise_compiler_error(
            "var 'lifecycle_phases': bad phase name or priority: " ~ (phase | string)[:200]
        ) }}
    {%- endif -%}
    {%- for step in phase['steps'] -%}
        {%- if step['step'] is not number -%}
            {{ exceptions.raise_compiler_error(
                "var 'lifecycle_phases': bad step number in phase " ~ phase['name']
            ) }}
        {%- endif -%}
        {%- set condition = namespace(sql=step['condition'] | string) -%}
        {%- for marker, relation in relations.items() -%}
            {%- set condition.sql = condition.sql | replace(marker, relation | string) -%}
        {%- endfor -%}
        {%- if '__lifecycle_ref__' in condition.sql -%}
            {{ exceptions.raise_compiler_error(
                "var 'lifecycle_phases': phase " ~ phase['name'] ~ " step " ~ step['step']
                ~ " reads a relation this model does not know: " ~ condition.sql[:300]
            ) }}
        {%- endif -%}
        {%- do selects.append({
            'phase': phase['name'],
            'step': step['step'] | int,
            'priority': phase['priority'] | int,
            'condition': condition.sql,
        }) -%}
    {%- endfor -%}
{%- endfor -%}

{#- The not-null columns (not_null_by_constraint in the yml) in one scan, then the index. -#}
{{ config(post_hook=[
    "{{ set_not_null_columns() }}",
    "create index on {{ this }} (customer_id)",
]) }}

with

customer_facts as (

    select * from {{ ref('customer_facts') }}

),

eligible as (

    {% for s in selects %}
    select
        customer_id,
        as_of_date,
        '{{ s.phase }}' as phase,
        {{ s.step }} as step,
        {{ s.priority }} as priority
    from customer_facts
    where {{ s.condition }}
    {% if not loop.last %}union all{% endif %}
    {% else %}
    -- no enabled phase in the rules file: nobody is eligible
    select
        customer_id,
        as_of_date,
        null as phase,
        null as step,
        null as priority
    from customer_facts
    where false
    {% endfor %}

),

final as (

    select
        cast(customer_id as text) as customer_id,
        cast(as_of_date as date) as as_of_date,
        cast(phase as text) as phase,
        cast(step as integer) as step,
        cast(priority as integer) as priority
    from eligible

)

select * from final
