{#-
    Uplift of each phase against the control group: all steps together (step 0, variant '*'),
    each step (variant '*') and each A/B variant of a step. The control group has no variant:
    each variant is compared with the control group of its step. The 95% interval is the
    two-proportion normal approximation with unpooled variance; it is null when either arm
    is empty.
-#}
{%- set z = 1.959964 -%}

with

exposures as (

    select * from {{ ref('phase_conversions') }}

),

as_of as (

    select {{ as_of_date() }} as as_of_date

),

treated as (

    select
        phase,
        coalesce(step, 0) as step,
        coalesce(variant, '*') as variant,
        count(*) as treated_customers,
        count(*) filter (where converted) as treated_conversions,
        sum(revenue) as treated_revenue,
        count(*) filter (where channel = 'sms') as sms_messages,
        count(*) filter (where channel = 'email') as email_messages,
        count(*) filter (where is_window_closed) as treated_windows_closed
    from exposures
    where arm = 'treated'
    group by grouping sets ((phase), (phase, step), (phase, step, variant))

),

control as (

    select
        phase,
        coalesce(step, 0) as step,
        count(*) as control_customers,
        count(*) filter (where converted) as control_conversions,
        sum(revenue) as control_revenue,
        count(*) filter (where is_window_closed) as control_windows_closed
    from exposures
    where arm = 'control'
    group by grouping sets ((phase), (phase, step))

),

joined as (

    select
        coalesce(treated.phase, control.phase) as phase,
        coalesce(treated.step, control.step) as step,
        coalesce(treated.variant, '*') as variant,
        coalesce(treated.treated_customers, 0) as treated_customers,
        coalesce(treated.treated_conversions, 0) as treated_conversions,
        coalesce(treated.treated_revenue, 0) as treated_revenue,
        coalesce(treated.treated_windows_closed, 0) as treated_windows_closed,
        coalesce(treated.sms_messages, 0) as sms_messages,
        coalesce(treated.email_messages, 0) as email_messages,
        coalesce(control.control_customers, 0) as control_customers,
        coalesce(control.control_conversions, 0) as control_conversions,
        coalesce(control.control_revenue, 0) as control_revenue,
        coalesce(control.control_windows_closed, 0) as control_windows_closed
    from treated
    full outer join control
        on treated.phase = control.phase
        and treated.step = control.step

),

rates as (

    select
        joined.*,
        treated_conversions::numeric / nullif(treated_customers, 0) as treated_rate,
        control_conversions::numeric / nullif(control_customers, 0) as control_rate,
        treated_revenue / nullif(treated_customers, 0) as treated_revenue_per_customer,
        control_revenue / nullif(control_customers, 0) as control_revenue_per_customer
    from joined

),

uplift as (

    select
        rates.*,
        treated_rate - control_rate as uplift,
        sqrt(
            treated_rate * (1 - treated_rate) / nullif(treated_customers, 0)
            + control_rate * (1 - control_rate) / nullif(control_customers, 0)
        ) as uplift_se
    from rates

),

final as (

    select
        uplift.phase,
        uplift.step,
        uplift.variant,
        uplift.treated_customers,
        uplift.treated_conversions,
        round(uplift.treated_rate, 6) as treated_rate,
        uplift.control_customers,
        uplift.control_conversions,
        round(uplift.control_rate, 6) as control_rate,
        round(uplift.uplift, 6) as uplift,
        round(uplift.uplift - {{ z }} * uplift.uplift_se, 6) as uplift_ci_low,
        round(uplift.uplift + {{ z }} * uplift.uplift_se, 6) as uplift_ci_high,
        round(uplift.uplift * uplift.treated_customers, 2) as incremental_conversions,
        uplift.treated_revenue,
        uplift.control_revenue,
        round(
            (uplift.treated_revenue_per_customer - uplift.control_revenue_per_customer)
            * uplift.treated_customers,
            2
        ) as incremental_revenue,
        uplift.sms_messages,
        uplift.email_messages,
        uplift.treated_windows_closed,
        uplift.control_windows_closed,
        as_of.as_of_date
    from uplift
    cross join as_of

)

select * from final
