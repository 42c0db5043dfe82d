"""Per-day summaries of the outbox (what the daily DAG logs) and the HTML report."""

from __future__ import annotations

import html
import io
import json
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg

from lifecycle.logs import get_logger
from lifecycle.rules import sms
from lifecycle.settings import Settings, get_settings

log = get_logger(__name__)


def day_counts(url: str, plan_date: date) -> dict[str, Any]:
    """Messages by phase x channel x status and skips by reason, for one planning date."""
    with psycopg.connect(url) as conn:
        msgs = conn.execute(
            "select phase, channel, status, count(*) from ops.outbox where plan_date = %s "
            "group by 1, 2, 3",
            (plan_date,),
        ).fetchall()
        skips = conn.execute(
            "select reason, count(*) from ops.skips where plan_date = %s group by 1", (plan_date,)
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

SECTIONS = (
    ("audience", "Daily audience and sends"),
    ("skips", "Skip reasons"),
    ("per-customer", "Messages per customer"),
    ("uplift", "Conversions and uplift against the control group"),
    ("cost", "Cost"),
    ("retention", "Retention metrics"),
    ("simulation", "AS IS vs TO BE (simulation)"),
)


@dataclass
class Report:
    path: Path
    headline: dict[str, Any]


def _svg(fig: Any) -> str:
    """A matplotlib figure as inline SVG text (no XML prolog), then closed."""
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    text = buf.getvalue()
    return text[text.find("<svg") :]


def _figure(width: float = 9, height: float = 3.2, nrows: int = 1, ncols: int = 1,
            **kw: Any) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["svg.fonttype"] = "none"  # text stays text: small and searchable
    matplotlib.rcParams["svg.hashsalt"] = "lifecycle"  # the same data gives the same file
    import matplotlib.pyplot as plt

    return plt.subplots(nrows, ncols, figsize=(width, height), **kw)


def _exists(conn: psycopg.Connection, relation: str) -> bool:
    return conn.execute("select to_regclass(%s)", (relation,)).fetchone()[0] is not None


def _rows(conn: psycopg.Connection, query: str, params: Any = None) -> list[dict[str, Any]]:
    cur = conn.execute(query, params)
    names = [d.name for d in cur.description]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def _table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    if not rows:
        return "<p class='empty'>No rows in this period.</p>"
    head = "".join(f"<th>{html.escape(title)}</th>" for _, title in columns)
    body = []
    for row in rows:
        cells = "".join(f"<td>{html.escape(_fmt(row.get(key)))}</td>" for key, _ in columns)
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float | Decimal):
        v = float(value)
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:,.4g}" if abs(v) < 1 else f"{v:,.2f}"
    return str(value)


def _audience_chart(daily: list[dict[str, Any]], first: date, last: date) -> str:
    from lifecycle.planning.plan import PHASES_IN_ORDER

    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    fig, (ax1, ax2) = _figure(10, 5.5, 2, 1, sharex=True)
    for phase in PHASES_IN_ORDER:
        eligible = {r["day"]: r["eligible"] for r in daily if r["phase"] == phase}
        ax1.plot(days, [eligible.get(d, 0) for d in days], label=phase)
    ax1.set_ylabel("eligible customers")
    ax1.legend(fontsize=8, ncol=5, loc="upper right")
    bottom = [0] * len(days)
    for phase in PHASES_IN_ORDER:
        for channel in ("sms", "email"):
            sent = {r["day"]: r[channel] for r in daily if r["phase"] == phase}
            values = [sent.get(d, 0) for d in days]
            if not any(values):
                continue
            ax2.bar(days, values, bottom=bottom, label=f"{phase} {channel}",
                    hatch="//" if channel == "email" else None)
            bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax2.set_ylabel("messages")
    if any(bottom):
        ax2.legend(fontsize=7, ncol=5, loc="upper right")
    fig.autofmt_xdate()
    return _svg(fig)


def _bar_chart(labels: list[str], values: list[float], xlabel: str) -> str:
    fig, ax = _figure(9, max(1.8, 0.35 * len(labels) + 0.8))
    ax.barh(labels, values)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    return _svg(fig)


def _histogram(counts: list[tuple[int, int]]) -> str:
    fig, ax = _figure(9, 2.8)
    ax.bar([str(k) for k, _ in counts], [n for _, n in counts])
    ax.set_xlabel("messages in the period")
    ax.set_ylabel("customers")
    return _svg(fig)


def _uplift_chart(rows: list[dict[str, Any]]) -> str:
    shown = [r for r in rows if r["uplift"] is not None]
    if not shown:
        return "<p class='empty'>No phase has both messaged and control customers yet.</p>"
    fig, ax = _figure(9, 0.45 * len(shown) + 1)
    labels = [f"{r['phase']} {r['step'] or 'all'} {r['variant']}" for r in shown]
    mid = [float(r["uplift"]) * 100 for r in shown]
    low = [m - float(r["uplift_ci_low"]) * 100 for m, r in zip(mid, shown, strict=True)]
    high = [float(r["uplift_ci_high"]) * 100 - m for m, r in zip(mid, shown, strict=True)]
    ax.errorbar(mid, range(len(shown)), xerr=[low, high], fmt="o", capsize=4)
    ax.axvline(0, color="grey", linewidth=0.8)
    ax.set_yticks(range(len(shown)), labels)
    ax.invert_yaxis()
    ax.set_xlabel("uplift, percentage points (95% interval)")
    return _svg(fig)


def _simulation_section(sim: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
    from lifecycle.planning.plan import PHASES_IN_ORDER

    if not sim:
        return (
            "<p class='empty'>No simulation stored in ops.simulations: run "
            "<code>lifecycle simulate --customers N --days D</code>.</p>",
            {},
        )
    pols = sim["policies"]
    names = [p for p in ("blast", "lifecycle") if p in pols]
    titles = {"blast": "AS IS (blast)", "lifecycle": "TO BE (lifecycle)"}
    measures = [
        ("messages", "messages sent"),
        ("messages_per_customer_year", "messages per customer per year"),
        ("messaged_customers", "customers messaged"),
        ("sms", "SMS"),
        ("sms_segments", "SMS segments"),
        ("email", "emails"),
        ("sms_cost", f"SMS cost, {sim['currency']}"),
        ("email_cost", f"email cost, {sim['currency']}"),
        ("cost", f"total cost, {sim['currency']}"),
        ("opt_outs", "opt-outs"),
        ("conversions_total", "conversions caused"),
        ("revenue_total", f"revenue caused, {sim['currency']}"),
    ]
    head = "".join(f"<th>{titles[n]}</th>" for n in names)
    body = [
        "<tr><td>{}</td>{}</tr>".format(
            html.escape(title), "".join(f"<td>{_fmt(pols[n][key])}</td>" for n in names)
        )
        for key, title in measures
    ]
    for phase in PHASES_IN_ORDER:
        body.append(
            "<tr><td>{}</td>{}</tr>".format(
                f"conversions / revenue: {phase}",
                "".join(
                    f"<td>{pols[n]['conversions'][phase]} / {_fmt(pols[n]['revenue'][phase])}</td>"
                    for n in names
                ),
            )
        )
    table = (
        f"<table><thead><tr><th>measure</th>{head}</tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table>"
    )
    fig, axes = _figure(10, 2.6, 1, 3)
    for ax, (key, title) in zip(
        axes,
        [("messages_per_customer_year", "messages / customer / year"),
         ("cost", f"cost, {sim['currency']}"), ("revenue_total", "revenue caused")],
        strict=True,
    ):
        ax.bar([titles[n].split(" (")[0] for n in names],
               [pols[n][key] for n in names], color=["#c44", "#2a7"][: len(names)])
        ax.set_title(title, fontsize=9)
    chart = _svg(fig)
    caption = (
        f"<p>Simulation #{sim.get('simulation_id', '?')} of {sim['created_at']}: "
        f"{sim['customers']} customers, {sim['days']} days from {sim['first_day']}, seed "
        f"{sim['seed']}; SMS {sim['sms_cost']} and email {sim['email_cost']} {sim['currency']}."
        " The club's own behaviour is generated; messages add responses with the probabilities"
        " below (only customers who would not have converted anyway respond). Lifecycle days "
        "run the real dbt models planning reads, planning and sandbox dispatch.</p>"
        f"<pre>{html.escape(json.dumps(sim['model'], indent=1))}</pre>"
    )
    headline = {n: {k: pols[n][k] for k in ("messages_per_customer_year", "cost",
                                             "conversions_total", "revenue_total", "opt_outs")}
                for n in names}
    return chart + table + caption, headline


def build_report(
    url: str, first: date, last: date, settings: Settings | None = None
) -> tuple[str, dict[str, Any]]:
    """The report's HTML for ``first``..``last`` and its headline figures."""
    settings = settings or get_settings()
    schema = settings.dbt_schema
    cur_ = settings.currency
    with psycopg.connect(url) as conn:
        customers = conn.execute("select count(*) from raw.customers").fetchone()[0]
        daily = _rows(
            conn,
            """
            with m as (
                select plan_date as day, phase, count(*) filter (where channel = 'sms') as sms,
                       count(*) filter (where channel = 'email') as email, count(*) as n
                from ops.outbox where plan_date between %(f)s and %(l)s group by 1, 2
            ), s as (
                select plan_date as day, phase, count(distinct customer_id) as n
                from ops.skips where plan_date between %(f)s and %(l)s group by 1, 2
            )
            select coalesce(m.day, s.day) as day, coalesce(m.phase, s.phase) as phase,
                   coalesce(m.sms, 0) as sms, coalesce(m.email, 0) as email,
                   coalesce(m.n, 0) + coalesce(s.n, 0) as eligible
            from m full join s on m.day = s.day and m.phase = s.phase order by 1, 2
            """,
            {"f": first, "l": last},
        )
        skips = conn.execute(
            "select reason, count(*) from ops.skips where plan_date between %s and %s "
            "group by 1 order by 2 desc",
            (first, last),
        ).fetchall()
        per_customer = conn.execute(
            """
            select coalesce(n, 0) as messages, count(*) from raw.customers c
            left join (select customer_id, count(*) as n from ops.outbox
                       where plan_date between %s and %s group by 1) o using (customer_id)
            group by 1 order by 1
            """,
            (first, last),
        ).fetchall()
        sent = dict(
            conn.execute(
                "select channel, count(*) from ops.outbox where status = 'sent' "
                "and plan_date between %s and %s group by 1",
                (first, last),
            ).fetchall()
        )
        segments = sum(
            n * sms.segments(body)
            for body, n in conn.execute(
                "select body, count(*) from ops.outbox where status = 'sent' and channel = 'sms' "
                "and plan_date between %s and %s group by 1",
                (first, last),
            ).fetchall()
        )
        uplift = (
            _rows(conn, f'select * from "{schema}".phase_uplift order by phase, step, variant')
            if _exists(conn, f'"{schema}".phase_uplift')
            else []
        )
        retention = (
            _rows(
                conn,
                f'select * from "{schema}".metrics_retention_monthly '
                "where month <= %s order by month desc, club_id limit 24",
                (last,),
            )
            if _exists(conn, f'"{schema}".metrics_retention_monthly')
            else []
        )
    from lifecycle.insight.simulate import latest_simulation

    sim = latest_simulation(url)
    messages = sum(sent.values())
    sms_cost = segments * settings.sms_cost
    email_cost = sent.get("email", 0) * settings.email_cost
    incremental = sum(
        float(r["incremental_conversions"] or 0)
        for r in uplift
        if r["step"] == 0 and r["variant"] == "*"
    )
    for r in uplift:
        cost = r["sms_messages"] * settings.sms_cost + r["email_messages"] * settings.email_cost
        r["cost"] = round(cost, 2)
        inc = float(r["incremental_conversions"] or 0)
        r["cost_per_incremental"] = round(cost / inc, 2) if inc > 0 else None
    sections: dict[str, str] = {}
    sections["audience"] = _audience_chart(daily, first, last) + _table(
        daily, [("day", "day"), ("phase", "phase"), ("eligible", "eligible"),
                ("sms", "SMS"), ("email", "email")]
    )
    sections["skips"] = (
        _bar_chart([r for r, _ in skips], [n for _, n in skips], "skipped (customer, step, day)")
        if skips else "<p class='empty'>No skips in this period.</p>"
    )
    sections["per-customer"] = _histogram(per_customer) + (
        f"<p>{messages} messages sent to a base of {customers} customers: "
        f"{messages / max(customers, 1):.3f} per customer in {(last - first).days + 1} days.</p>"
    )
    sections["uplift"] = _uplift_chart(uplift) + _table(
        uplift,
        [("phase", "phase"), ("step", "step (0 = all)"), ("variant", "variant"),
         ("treated_customers", "messaged"), ("treated_conversions", "converted"),
         ("treated_rate", "rate"), ("control_customers", "control"),
         ("control_conversions", "converted"), ("control_rate", "rate"),
         ("uplift", "uplift"), ("uplift_ci_low", "95% low"), ("uplift_ci_high", "95% high"),
         ("incremental_conversions", "incremental conversions"),
         ("incremental_revenue", f"incremental revenue, {cur_}"),
         ("cost", f"cost, {cur_}"), ("cost_per_incremental", "cost per incremental conversion")],
    ) + (
        "<p>Conversions are counted from the messages' data as of the last build (all time, not "
        "only this period); windows still open count what happened so far, for both arms.</p>"
        if uplift else "<p class='empty'>phase_uplift is not built: run dbt (the daily run "
        "does).</p>"
    )
    sections["cost"] = _table(
        [
            {"what": "SMS", "n": sent.get("sms", 0), "unit": f"{settings.sms_cost} per segment",
             "segments": segments, "cost": round(sms_cost, 2)},
            {"what": "email", "n": sent.get("email", 0), "unit": f"{settings.email_cost} each",
             "segments": None, "cost": round(email_cost, 2)},
            {"what": "total", "n": messages, "unit": None, "segments": None,
             "cost": round(sms_cost + email_cost, 2)},
        ],
        [("what", "channel"), ("n", "messages sent"), ("segments", "SMS segments"),
         ("unit", f"price, {cur_}"), ("cost", f"cost, {cur_}")],
    )
    sections["retention"] = _table(
        retention,
        [("month", "month"), ("club_id", "club"), ("customers_start", "S"),
         ("customers_end", "E"), ("new_customers", "N"), ("crr", "CRR"),
         ("churn_rate", "churn"), ("repeat_purchase_rate", "repeat purchase rate"),
         ("ltv", f"LTV, {cur_}"), ("is_complete", "complete")],
    )
    sections["simulation"], sim_headline = _simulation_section(sim)
    headline = {
        "from": first.isoformat(),
        "to": last.isoformat(),
        "customers": customers,
        "messages": messages,
        "messages_per_customer": round(messages / max(customers, 1), 3),
        "cost": round(sms_cost + email_cost, 2),
        "currency": cur_,
        "incremental_conversions": round(incremental, 1),
        "simulation": sim_headline,
    }
    body = "".join(
        f"<section id='{key}'><h2>{html.escape(title)}</h2>{sections[key]}</section>"
        for key, title in SECTIONS
    )
    head = "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(_fmt(v))}</li>"
                   for k, v in headline.items() if k != "simulation")
    page = (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>lifecycle report {first} .. {last}</title><style>{_CSS}</style></head><body>"
        f"<h1>Lifecycle report {first} .. {last}</h1><ul class='headline'>{head}</ul>"
        f"{body}<footer>Generated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by lifecycle report."
        "</footer></body></html>"
    )
    return page, headline


_CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:1em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:13px;margin:.5em 0}
td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}
th{background:#f3f3f3}.empty{color:#888}section{margin-bottom:2em}
svg{max-width:100%;height:auto}.headline li{display:inline-block;margin-right:1.5em}
"""


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
