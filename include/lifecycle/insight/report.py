"""Per-day summaries of the outbox (what the daily DAG logs) and the HTML report."""

from __future__ import annotations

import functools
import json
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from lifecycle.insight import charts, forecast, uplift
from lifecycle.logs import get_logger
from lifecycle.rules import sms
from lifecycle.rules.compiled import Rules
from lifecycle.rules.loading import load_rules
from lifecycle.settings import Settings, get_settings

log = get_logger(__name__)


def day_counts(url: str, plan_date: date) -> dict[str, Any]:
    """Messages by phase x channel x status, skips by reason, and the control group's
    would-have-been messages by phase x channel, for one planning date."""
    with psycopg.connect(url) as conn:
        msgs = conn.execute(
            "select phase, channel, status, count(*) from ops.outbox where plan_date = %s "
            "group by 1, 2, 3",
            (plan_date,),
        ).fetchall()
        skips = conn.execute(
            "select reason, count(*) from ops.skips where plan_date = %s group by 1", (plan_date,)
        ).fetchall()
        # the control group's would-have-been messages, by the channel they would have gone on
        control = conn.execute(
            "select phase || ':' || channel, count(*) from ops.skips where plan_date = %s "
            "and reason = 'control_group' and channel is not null group by 1",
            (plan_date,),
        ).fetchall()
    by_phase_channel: Counter = Counter()
    by_status: Counter = Counter()
    for phase, channel, status, n in msgs:
        by_phase_channel[f"{phase}:{channel}"] += n
        by_status[status] += n
    return {
        "plan_date": plan_date.isoformat(),
        "messages": dict(sorted(by_phase_channel.items())),
        "status": dict(sorted(by_status.items())),
        "skipped": dict(sorted((r, n) for r, n in skips)),
        "control": dict(sorted(control)),
    }


def day_summary(url: str, plan_date: date, planned: dict, sent: list[dict]) -> dict[str, Any]:
    """Log and record the day's outcome (no personal data: counts only)."""
    counts = day_counts(url, plan_date)
    counts["dispatch"] = list(sent)  # a lazy XCom sequence in Airflow: materialise it
    log.info("lifecycle day %s: %s", plan_date, json.dumps(counts, sort_keys=True))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "insert into ops.runs (plan_date, step, finished_at, status, summary) "
            "values (%s, 'summary', now(), 'ok', %s)",
            (plan_date, json.dumps(counts)),
        )
    return counts


# --------------------------------------------------------------------------- the HTML report
#
# Read by a club manager: plain words, percents for shares, an interval and a verdict for
# every effect (lifecycle.insight.uplift), sizes that are too small said so. The page is one
# file with no script: charts are inline SVG, the template is templates/report.html.j2.

SECTIONS = (
    ("headline", "In short"),
    ("uplift", "Did the messages work?"),
    ("phases", "Phase by phase"),
    ("forecast", "Next month: the profit to expect"),
    ("funnel", "Delivery: sent, delivered, opened, clicked"),
    ("audience", "Daily audience and sends"),
    ("skips", "Who was not messaged, and why"),
    ("offers", "Which offer, and when"),
    ("per-customer", "Messages per customer"),
    ("cost", "Cost"),
    ("retention", "Retention metrics"),
    ("contacts", "Contact health"),
    ("simulation", "Simulation: AS IS (blast) vs TO BE (lifecycle)"),
)
SIMULATION_TITLES = {"blast": "AS IS (blast)", "lifecycle": "TO BE (lifecycle)"}
# what each phase's conversion is (phase_conversions.conversion_event), as a noun and a verb
EVENT_WORDS = {
    "first_visit": ("visits", "came to the club"),
    "addon_purchase": ("add-on purchases", "bought an add-on"),
    "cross_sell_purchase": ("service purchases", "bought a service"),
    "renewal": ("renewals", "renewed their membership"),
    "new_membership": ("memberships bought back", "bought a membership again"),
}
SMALL_BASE = 30  # a retention month with fewer members at its start is flagged


@dataclass
class Report:
    path: Path
    headline: dict[str, Any]


def _exists(conn: psycopg.Connection, relation: str) -> bool:
    return conn.execute("select to_regclass(%s)", (relation,)).fetchone()[0] is not None


def _rows(conn: psycopg.Connection, query: str, params: Any = None) -> list[dict[str, Any]]:
    cur = conn.execute(query, params)
    names = [d.name for d in cur.description]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def _float(v: Any) -> float | None:
    return None if v is None else float(v)


def pct(v: Any, digits: int = 1) -> str:
    """A share as a percent: 0.1234 -> '12.3%'."""
    return "–" if v is None else f"{float(v) * 100:.{digits}f}%"


def pts(v: Any) -> str:
    """A difference of two shares in percentage points: 0.032 -> '+3.2 pp'."""
    return "–" if v is None else f"{float(v) * 100:+.1f} pp"


def num(v: Any, digits: int = 1) -> str:
    if v is None:
        return "–"
    if isinstance(v, int):
        return f"{v:,}"
    return f"{float(v):,.{digits}f}"


def signed(v: Any) -> str:
    return "–" if v is None else f"{float(v):+,.1f}"


def amount(v: Any) -> str:
    """Money, whole units with a sign when negative: 1234.5 -> '1,234'."""
    return "–" if v is None else f"{float(v):,.0f}"


def ratio(v: Any) -> str:
    return "–" if v is None else f"{float(v):,.1f}"


@functools.cache
def _environment() -> Any:
    """One per process: the report's template is compiled to Python once, not every day
    (~0.1-0.2 s of a daily report)."""
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    env = Environment(
        loader=PackageLoader("lifecycle.insight", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
    )
    env.filters.update(pct=pct, pts=pts, num=num, signed=signed, amount=amount, ratio=ratio)
    env.globals.update(pct=pct, pts=pts, num=num, signed=signed, amount=amount, ratio=ratio)
    return env


def _outbox(conn: psycopg.Connection, first: date, last: date) -> dict[str, Any]:
    """What the outbox holds for the period: sent by channel, segments, expired and the rest."""
    p = {"f": first, "l": last}
    status = dict(conn.execute(
        "select status, count(*) from ops.outbox where plan_date between %(f)s and %(l)s "
        "group by 1", p).fetchall())
    by_phase: dict[str, dict[str, int]] = {}
    # a call is made (and costs the desk's time) whatever its outcome: answered ones are sent,
    # unanswered ones and wrong numbers failed with the outcome
    for phase, channel, body, n in conn.execute(
        "select phase, channel, body, count(*) from ops.outbox where (status = 'sent' "
        "or (channel = 'call' and last_error in ('call_no_answer', 'call_wrong_number'))) "
        "and plan_date between %(f)s and %(l)s group by 1, 2, 3", p,
    ).fetchall():
        row = by_phase.setdefault(phase, {"sms": 0, "email": 0, "call": 0, "segments": 0})
        row[channel] += n
        if channel == "sms":
            row["segments"] += n * sms.segments(body)
    reached = dict(conn.execute(
        "select phase, count(distinct customer_id) from ops.outbox where status = 'sent' "
        "and plan_date between %(f)s and %(l)s group by 1", p).fetchall())
    for phase, row in by_phase.items():
        row["customers"] = reached.get(phase, 0)
    return {"status": status, "by_phase": by_phase}


def margins(rules: Rules | None) -> dict[str, float]:
    """Each offer's margin from the rules file, by 'phase|step|variant' and by 'phase|step'
    (the step's own offer: for rows that carry no variant)."""
    out: dict[str, float] = {}
    for phase in rules.phases if rules is not None else []:
        for step in phase.steps:
            out[f"{phase.name}|{step.number}"] = step.offer.margin
            for v in step.variants:
                out[f"{phase.name}|{step.number}|{v.name}"] = v.offer.margin
    return out


def _comparisons(conn: psycopg.Connection, schema: str, first: date, last: date,
                 margin: dict[str, float]) -> list[dict[str, Any]] | None:
    """Per phase and arm, the customers exposed in the period (distinct) and who converted;
    their revenue, and their revenue times the margin of the offer they got or would have got
    (an offer the rules file no longer has counts at 100%)."""
    if not _exists(conn, f'"{schema}".phase_conversions'):
        return None
    return _rows(
        conn,
        f"""
        with margins as (
            select * from unnest(%(keys)s::text[], %(margins)s::float8[]) as m(key, margin)
        ), per_customer as (
            select pc.phase, pc.arm, pc.customer_id, min(pc.conversion_event) as event,
                   bool_or(pc.converted) as converted, max(pc.revenue) as revenue,
                   max(pc.revenue * coalesce(mv.margin, ms.margin, 1)::numeric)
                       as margin_revenue,
                   bool_or(not pc.is_window_closed) as open_window
            from "{schema}".phase_conversions pc
            left join margins mv on mv.key = pc.phase || '|' || pc.step || '|' || pc.variant
            left join margins ms on ms.key = pc.phase || '|' || pc.step
            where pc.exposed_on between %(f)s and %(l)s
            group by 1, 2, 3
        )
        select phase, arm, min(event) as event, count(*) as customers,
               count(*) filter (where converted) as conversions,
               coalesce(sum(revenue) filter (where converted), 0) as revenue,
               coalesce(sum(margin_revenue) filter (where converted), 0) as margin_revenue,
               count(*) filter (where open_window) as open_windows
        from per_customer group by 1, 2
        """,
        {"f": first, "l": last, "keys": list(margin), "margins": list(margin.values())},
    )


def _global_control(conn: psycopg.Connection, schema: str, first: date,
                    last: date) -> uplift.Comparison | None:
    """Every messaged customer against every control customer of the period, over all phases.

    A customer counts once: converted when any of their exposures in the period converted. A
    customer with exposures in both groups (the control group's salt changed within the
    period) counts as messaged.
    """
    if not _exists(conn, f'"{schema}".phase_conversions'):
        return None
    row = conn.execute(
        f"""
        with per_customer as (
            select customer_id, bool_or(arm = 'treated') as treated,
                   bool_or(converted) as converted
            from "{schema}".phase_conversions
            where exposed_on between %(f)s and %(l)s
            group by 1
        )
        select count(*) filter (where treated),
               count(*) filter (where treated and converted),
               count(*) filter (where not treated),
               count(*) filter (where not treated and converted)
        from per_customer
        """,
        {"f": first, "l": last},
    ).fetchone()
    if not row[0] and not row[2]:
        return None
    return uplift.compare(*row)


def _phases(arms: list[dict[str, Any]], outbox: dict[str, Any], settings: Settings
            ) -> list[dict[str, Any]]:
    from lifecycle.planning.plan import PHASES_IN_ORDER

    by = {(a["phase"], a["arm"]): a for a in arms}
    out = []
    for phase in PHASES_IN_ORDER:
        t, c = by.get((phase, "treated")), by.get((phase, "control"))
        sent = outbox["by_phase"].get(
            phase, {"sms": 0, "email": 0, "call": 0, "segments": 0, "customers": 0})
        messages = sent["sms"] + sent["email"] + sent["call"]
        if t is None and c is None and not messages:
            continue
        nt, nc = (t or {}).get("customers", 0), (c or {}).get("customers", 0)
        xt, xc = (t or {}).get("conversions", 0), (c or {}).get("conversions", 0)
        cmp_ = uplift.compare(nt, xt, nc, xc)
        event = (t or c or {}).get("event")
        noun, verb = EVENT_WORDS.get(event, ("conversions", "converted"))
        cost = message_cost(sent, settings)
        revenue = sum(float((a or {}).get("revenue", 0)) for a in (t, c))
        margin_revenue = sum(float((a or {}).get("margin_revenue", 0)) for a in (t, c))
        money = uplift.money(cmp_, revenue, margin_revenue, cost)
        out.append({
            "phase": phase, "noun": noun, "verb": verb, "cmp": cmp_, "sent": sent,
            "messages": messages, "cost": cost, "money": money,
            "margin": margin_revenue / revenue if revenue else None,
            "margin_revenue": margin_revenue,
            "incremental_revenue": money.revenue[0] if money.revenue else None,
            "open_windows": (t or {}).get("open_windows", 0) + (c or {}).get("open_windows", 0),
        })
    return out


def message_cost(sent: dict[str, int], settings: Settings) -> float:
    """What a phase's sent messages cost: billed units x price. SMS are billed by segment (a
    Cyrillic text of 71+ characters is two), calls made (reached or not) at ``call_cost``."""
    return (sent["segments"] * settings.sms_cost + sent["email"] * settings.email_cost
            + sent.get("call", 0) * settings.call_cost)


def _funnel(conn: psycopg.Connection, schema: str, first: date,
            last: date) -> list[dict[str, Any]] | None:
    if not _exists(conn, f'"{schema}".message_delivery'):
        return None
    rows = _rows(
        conn,
        f"""
        select channel, count(*) as sent,
               count(*) filter (where delivered_at is not null or first_opened_at is not null
                                or first_clicked_at is not null) as delivered,
               count(*) filter (where first_opened_at is not null
                                or first_clicked_at is not null) as opened,
               count(*) filter (where first_clicked_at is not null) as clicked,
               count(*) filter (where failed_at is not null and delivered_at is null) as failed,
               count(*) filter (where events = 0) as silent
        from "{schema}".message_delivery
        where outbox_status = 'sent' and plan_date between %(f)s and %(l)s
        group by 1 order by 1 desc
        """,
        {"f": first, "l": last},
    )
    for r in rows:
        r["title"] = "SMS" if r["channel"] == "sms" else "Email"
        if r["channel"] == "sms":  # SMS providers report no opens or clicks
            r["opened"] = r["clicked"] = None
    return rows


def _simulation(conn: psycopg.Connection, first: date, last: date) -> dict[str, Any] | None:
    """The latest simulation whose days overlap the period, in words; None when there is none."""
    row = conn.execute(
        "select simulation_id, created_at, first_day, days, results from ops.simulations "
        "where first_day <= %(l)s and first_day + days - 1 >= %(f)s "
        "order by simulation_id desc limit 1",
        {"f": first, "l": last},
    ).fetchone()
    if row is None:
        return None
    sim_id, created_at, first_day, days, results = row
    pols = results["policies"]
    names = [p for p in ("blast", "lifecycle") if p in pols]
    model = results.get("model", {})
    return {
        "id": sim_id, "created_at": created_at, "first_day": first_day, "days": days,
        "last_day": first_day + timedelta(days=days - 1), "customers": results["customers"],
        "seed": results["seed"], "currency": results["currency"],
        "sms_cost": results["sms_cost"], "email_cost": results["email_cost"],
        "names": names, "titles": SIMULATION_TITLES, "policies": pols,
        "assumptions": assumptions(model),
        "sensitivity": sensitivity_line(pols, model, results["currency"]),
        "chart": charts.simulation(pols, names, {n: SIMULATION_TITLES[n].split(" (")[0]
                                                 for n in names}, results["currency"]),
    }


def _offers(conn: psycopg.Connection, schema: str, first: date, last: date,
            club_timezone: str) -> dict[str, Any]:
    """Messages sent by offer and why (next_best, fallback; fixed when the offer is the step's
    own), and by local hour of send_at in the customer's zone."""
    p = {"f": first, "l": last, "tz": club_timezone}
    offers = _rows(
        conn,
        "select phase, variant, coalesce(offer_code, '-') as offer_code, "
        "coalesce(offer_source, 'fixed') as source, count(*) as messages, "
        "count(distinct customer_id) as customers from ops.outbox "
        "where plan_date between %(f)s and %(l)s and status = 'sent' "
        "group by 1, 2, 3, 4 order by 1, 2, 4, 5 desc",
        p,
    )
    zone = "%(tz)s"
    join = ""
    if _exists(conn, f'"{schema}".stg_club__customers'):
        zone = "coalesce(c.timezone, %(tz)s)"
        join = f'left join "{schema}".stg_club__customers c on c.customer_id = o.customer_id'
    hours = conn.execute(
        f"select extract(hour from o.send_at at time zone {zone})::int, count(*) "
        f"from ops.outbox o {join} where o.plan_date between %(f)s and %(l)s "
        "and o.status = 'sent' group by 1 order by 1",
        p,
    ).fetchall()
    # the A/B test of the idea: each variant of a step whose messages carried a look-alike
    # offer, against the step's control group (phase_uplift: all exposures, not the period's)
    variants = []
    steps = sorted({(r["phase"]) for r in offers if r["source"] in ("next_best", "fallback")})
    if steps and _exists(conn, f'"{schema}".phase_uplift'):
        variants = _rows(
            conn,
            f'select phase, step, variant, treated_customers, treated_rate, control_rate, '
            f'uplift, uplift_ci_low, uplift_ci_high from "{schema}".phase_uplift '
            "where phase = any(%s) and step > 0 and variant <> '*' order by 1, 2, 3",
            (steps,),
        )
    return {"offers": offers, "hours": [(f"{h:02d}:00", n) for h, n in hours],
            "variants": variants}


def assumptions(model: dict[str, Any]) -> list[str]:
    """The simulation's response model as sentences (ResponseModel's fields), each with the
    figure it comes from when the model names one (``sources``)."""
    sources = model.get("sources") or {}

    def cite(key: str, sentence: str) -> str:
        return f"{sentence} (Source: {sources[key]}.)" if sources.get(key) else sentence

    out = []
    from lifecycle.planning.plan import PHASES_IN_ORDER

    rates = model.get("respond") or {}  # stored as JSON: its keys come back in any order
    for phase in sorted(rates, key=lambda p: (PHASES_IN_ORDER + (p,)).index(p)):
        name = phase.replace("_", " ")
        article = "An" if name[0] in "aeiou" else "A"
        out.append(cite(phase, f"{article} {name} message makes {pct(rates[phase], 0)} of the "
                        "customers who would not have converted anyway do so."))
    if "blast_respond" in model:
        out.append(cite("blast_respond", f"A blast SMS makes {pct(model['blast_respond'])} of "
                        "the members due to renew (membership ending within 45 days) or lapsed "
                        "buy a membership; it does nothing for the others."))
    if "opt_out" in model:
        more = (f", {1 + model['annoyance']:g} times as likely for each further message they got "
                "in the last 30 days" if model.get("annoyance") else "")
        out.append(cite("opt_out", f"Each message makes {pct(model['opt_out'])} of its "
                        f"recipients opt out{more}."))
    if "max_lag_days" in model:
        out.append(cite("max_lag_days", "A response comes 1 to "
                        f"{model['max_lag_days']} days after the message."))
    if model.get("blast_per_month"):
        low, high = model["blast_per_month"]
        out.append(cite("blast_per_month", f"AS IS sends its blast on {low} to {high} days a "
                        "month to every member."))
    for key, what in (("habit_timed_factor", "sent at the member's habit time"),
                      ("next_best_factor", "offering what look-alike regulars buy")):
        if key in model:
            out.append(cite(key, f"A message {what} is {model[key]:g} times as likely "
                            "to be answered."))
    return out


def sensitivity_line(pols: dict[str, Any], model: dict[str, Any], currency: str) -> str | None:
    """The lifecycle-vs-blast comparison if lifecycle messages converted at most
    ``sensitivity_multiple`` times the blast (``responses.sensitivity``), in words."""
    from lifecycle.insight.responses import sensitivity

    if "lifecycle" not in pols or "blast" not in pols:
        return None
    life, blast = pols["lifecycle"], pols["blast"]
    alt = sensitivity(life["conversions"], life["revenue"], model)
    if alt is None:
        return None
    lower = [p.replace("_", " ") for p, f in alt["factor"].items() if f < 1]
    return (
        f"If a lifecycle message converted only {alt['multiple']:g} times as often as a blast "
        f"SMS (at most {pct(alt['rate'])}; lowered for {', '.join(lower) or 'no phase'}), TO BE "
        f"would have caused about {alt['conversions']:,.0f} conversions and "
        f"{alt['revenue']:,.0f} {currency} of revenue, against AS IS's "
        f"{blast['conversions_total']:,} and {blast['revenue_total']:,.0f} {currency}, for "
        f"{life['cost']:,.2f} against {blast['cost']:,.2f} {currency} of messages. Computed from "
        "this run: each phase's caused conversions and revenue times the lower rate over the "
        "assumed one (what they are expected to be at that rate), not a second run."
    )


def _contact_health(conn: psycopg.Connection, schema: str) -> dict[str, Any] | None:
    """metrics_contact_health of its last build, phones and emails together per age bucket;
    None when it is not built."""
    if not _exists(conn, f'"{schema}".metrics_contact_health'):
        return None
    buckets = _rows(conn, f"""
        select age_bucket, label, min(bucket_order) as bucket_order,
               sum(contacts) as contacts, sum(dead_contacts) as dead,
               sum(unconfirmed_contacts) as unconfirmed, sum(alive_contacts) as alive,
               min(reference_dead_share_low) as reference_low,
               min(reference_dead_share_high) as reference_high, max(as_of_date) as as_of
        from "{schema}".metrics_contact_health group by 1, 2 order by 3""")
    kinds = _rows(conn, f"""
        select contact_kind, sum(contacts) as contacts, sum(dead_contacts) as dead,
               sum(unconfirmed_contacts) as unconfirmed
        from "{schema}".metrics_contact_health group by 1 order by 1""")
    for r in buckets:
        for k in ("reference_low", "reference_high"):
            r[k] = _float(r[k])
    contacts = sum(r["contacts"] for r in buckets)
    dead = sum(r["dead"] for r in buckets)
    return {
        "as_of": buckets[0]["as_of"] if buckets else None, "buckets": buckets, "kinds": kinds,
        "contacts": contacts, "dead": dead, "dead_share": dead / contacts if contacts else None,
        "chart": charts.contact_health(buckets),
    }


def build_report(
    url: str, first: date, last: date, settings: Settings | None = None
) -> tuple[str, dict[str, Any]]:
    """The report's HTML for ``first``..``last`` and its headline figures."""
    settings = settings or get_settings()
    schema = settings.dbt_schema
    p = {"f": first, "l": last}
    with psycopg.connect(url) as conn:
        customers = conn.execute("select count(*) from raw.customers").fetchone()[0]
        daily = _rows(
            conn,
            """
            with m as (
                select plan_date as day, phase, count(*) filter (where channel = 'sms') as sms,
                       count(*) filter (where channel = 'email') as email, count(*) as n
                from ops.outbox where plan_date between %(f)s and %(l)s and status = 'sent'
                group by 1, 2
            ), planned as (
                select plan_date as day, phase, count(distinct customer_id) as n
                from ops.outbox where plan_date between %(f)s and %(l)s group by 1, 2
            ), s as (
                select plan_date as day, phase, count(distinct customer_id) as n
                from ops.skips where plan_date between %(f)s and %(l)s group by 1, 2
            )
            select coalesce(planned.day, s.day) as day, coalesce(planned.phase, s.phase) as phase,
                   coalesce(m.sms, 0) as sms, coalesce(m.email, 0) as email,
                   coalesce(planned.n, 0) + coalesce(s.n, 0) as eligible
            from planned full join s on planned.day = s.day and planned.phase = s.phase
            left join m on m.day = coalesce(planned.day, s.day)
                       and m.phase = coalesce(planned.phase, s.phase)
            order by 1, 2
            """,
            p,
        )
        skips = conn.execute(
            "select reason, count(*) from ops.skips where plan_date between %(f)s and %(l)s "
            "group by 1 order by 2 desc", p).fetchall()
        per_customer = conn.execute(
            """
            select coalesce(n, 0) as messages, count(*) from raw.customers c
            left join (select customer_id, count(*) as n from ops.outbox where status = 'sent'
                       and plan_date between %(f)s and %(l)s group by 1) o using (customer_id)
            group by 1 order by 1
            """,
            p,
        ).fetchall()
        outbox = _outbox(conn, first, last)
        rules = load_rules(settings.rules_path) if settings.rules_path.exists() else None
        arms = _comparisons(conn, schema, first, last, margins(rules))
        everyone = _global_control(conn, schema, first, last)
        funnel = _funnel(conn, schema, first, last)
        retention = (
            _rows(conn, f'select * from "{schema}".metrics_retention_monthly where month <= %s '
                  "and month > %s - interval '12 months' order by month desc, club_id",
                  (last, last))
            if _exists(conn, f'"{schema}".metrics_retention_monthly') else None
        )
        sim = _simulation(conn, first, last)
        offers = _offers(conn, schema, first, last, settings.club_timezone)
        health = _contact_health(conn, schema)
        ctx = _context(settings, first, last, customers, daily, skips, per_customer, outbox,
                       arms, funnel, retention, sim, everyone)
        ahead = forecast.next_month(conn, schema, last, ctx["phases"], margins(rules), rules)
    ctx["forecast"] = ahead
    ctx["headline"].update(_forecast_headline(ahead))
    from markupsafe import Markup

    ctx["offers"] = offers
    ctx["contact_health"] = health and {**health, "chart": Markup(health["chart"])}
    ctx["hours_chart"] = Markup(charts.bars(
        [h for h, _ in offers["hours"]], [n for _, n in offers["hours"]],
        "messages sent, by local hour of send_at") if offers["hours"] else "")
    page = _environment().get_template("report.html.j2").render(**ctx)
    return page, ctx["headline"]


def _context(settings: Settings, first: date, last: date, customers: int, daily: list,
             skips: list, per_customer: list, outbox: dict, arms: list | None,
             funnel: list | None, retention: list | None, sim: dict | None,
             everyone: uplift.Comparison | None = None) -> dict[str, Any]:
    from markupsafe import Markup

    by_phase = outbox["by_phase"]
    sent_sms = sum(r["sms"] for r in by_phase.values())
    sent_email = sum(r["email"] for r in by_phase.values())
    sent_call = sum(r["call"] for r in by_phase.values())
    segments = sum(r["segments"] for r in by_phase.values())
    messages = sent_sms + sent_email + sent_call
    sms_cost, email_cost = segments * settings.sms_cost, sent_email * settings.email_cost
    call_cost = sent_call * settings.call_cost
    cost = sms_cost + email_cost + call_cost
    phases = _phases(arms, outbox, settings) if arms is not None else []
    tot = uplift.total([r["cmp"] for r in phases])
    # every message's cost counts against the phases' money, whatever phase it was sent for
    summed = uplift.money_total([r["money"] for r in phases])
    money = uplift.Money(cost, summed.revenue, summed.gross)
    status = outbox["status"]
    not_sent = {k: v for k, v in status.items() if k not in ("sent", "expired")}
    if funnel is not None:
        in_funnel = sum(r["sent"] for r in funnel)
        funnel_note = messages - in_funnel
    else:
        funnel_note = None
    for r in retention or []:
        r["small"] = (r.get("customers_start") or 0) < SMALL_BASE
    headline = {
        "from": first.isoformat(), "to": last.isoformat(), "customers": customers,
        "messages": messages, "sms": sent_sms, "email": sent_email, "calls": sent_call,
        "sms_segments": segments,
        "expired": status.get("expired", 0),
        "messages_per_customer": round(messages / max(customers, 1), 3),
        "cost": round(cost, 2), "currency": settings.currency,
        "incremental_conversions": round(tot.point, 1) if tot else None,
        "incremental_conversions_low": round(tot.low, 1) if tot else None,
        "incremental_conversions_high": round(tot.high, 1) if tot else None,
        "incremental_verdict": tot.verdict if tot else None,
        **_triple("incremental_revenue", money.revenue),
        **_triple("incremental_profit", money.profit),
        **_triple("return_on_spend", money.return_on_spend),
        "global_control": _global_headline(everyone),
        "simulation": ({n: {k: sim["policies"][n][k] for k in (
            "messages_per_customer_year", "cost", "conversions_total", "revenue_total",
            "opt_outs")} for n in sim["names"]} if sim else {}),
    }
    sections = dict(SECTIONS)
    return {
        "first": first, "last": last, "days": (last - first).days + 1,
        "titles": sections, "settings": settings, "currency": settings.currency,
        "headline": headline, "total": tot, "phases": phases, "money": money,
        "everyone": everyone,
        "rules": Markup(uplift.RULES_IN_WORDS),
        "verdicts": (uplift.EFFECT, uplift.NO_EFFECT, uplift.TOO_FEW),
        "min_arm": uplift.MIN_ARM, "small_base": SMALL_BASE,
        "sms_cost": sms_cost, "email_cost": email_cost, "call_cost": call_cost,
        "not_sent": not_sent, "comparisons_built": arms is not None,
        "uplift_chart": Markup(charts.uplift(phases)),
        "funnel": funnel, "funnel_note": funnel_note,
        "funnel_chart": Markup(charts.funnel(funnel or [])),
        "audience_chart": Markup(charts.audience(daily, first, last)), "daily": daily,
        "skips": skips,
        "skips_chart": Markup(charts.bars([r for r, _ in skips], [n for _, n in skips],
                                          "skipped (customer, step, day)") if skips else ""),
        "per_customer_chart": Markup(charts.histogram(per_customer)),
        "retention": retention,
        "retention_chart": Markup(charts.retention(retention or [])),
        "sim": sim and {**sim, "chart": Markup(sim["chart"])},
        "generated": datetime.now(UTC),
    }


def _triple(name: str, value: uplift.Interval | None) -> dict[str, float | None]:
    """A figure and its range as three headline keys: name, name_low, name_high."""
    point, low, high = value if value is not None else (None, None, None)
    return {name: None if point is None else round(point, 2),
            f"{name}_low": None if low is None else round(low, 2),
            f"{name}_high": None if high is None else round(high, 2)}


def _forecast_headline(ahead: dict[str, Any] | None) -> dict[str, Any]:
    """The next month's profit (total and range) and the rule of thumb's two figures."""
    return {
        **_triple("forecast_profit", ahead and ahead["total"]),
        "forecast_rule_of_thumb": ahead and _round(ahead["article"].profit),
        "forecast_rule_of_thumb_measured": ahead and _round(ahead["measured"].profit),
    }


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 2)


def _global_headline(c: uplift.Comparison | None) -> dict[str, Any] | None:
    if c is None:
        return None
    return {"treated": c.treated, "treated_conversions": c.treated_conversions,
            "control": c.control, "control_conversions": c.control_conversions,
            "difference": None if c.diff is None else round(c.diff, 4),
            "difference_low": None if c.low is None else round(c.low, 4),
            "difference_high": None if c.high is None else round(c.high, 4),
            "verdict": c.verdict}


def write_report(
    url: str,
    first: date,
    last: date,
    out: Path | None = None,
    settings: Settings | None = None,
) -> Report:
    """Write the self-contained HTML report (default: the reports dir from settings)."""
    settings = settings or get_settings()
    page, headline = build_report(url, first, last, settings)
    path = out or settings.reports_path / f"lifecycle-{first}-{last}.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return Report(path, headline)


def write_day_report(url: str, plan_date: date, settings: Settings | None = None) -> str:
    """The daily DAG's artifact: the report of the 30 days ending on ``plan_date``; its path."""
    settings = settings or get_settings()
    report = write_report(
        url, plan_date - timedelta(days=29), plan_date,
        settings.reports_path / f"lifecycle-{plan_date}.html", settings,
    )
    log.info("lifecycle report %s: %s", report.path, json.dumps(report.headline, default=str))
    return str(report.path)
