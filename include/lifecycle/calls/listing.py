"""The daily call list: who each club's front desk calls on date D, why, what they are worth
and when to reach them, the most valuable first. As CSV (the file the desk fills in and loads
back as outcomes) or a printable HTML page.
"""

from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass
from datetime import date

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from lifecycle.delivery.dispatch import skip_suppressed
from lifecycle.logs import get_logger
from lifecycle.planning.audience import SEND_HOUR_RELATION, facts_table
from lifecycle.planning.plan import CALL_NO_ANSWER
from lifecycle.rules.compiled import Rules
from lifecycle.settings import Settings

log = get_logger(__name__)

# The columns the front desk fills in; the outcomes file (lifecycle.calls.outcomes) reads them
OUTCOME_COLUMNS = ("called_at", "outcome", "note")


@dataclass(frozen=True)
class Call:
    """One line of the call list."""

    call_id: int  # ops.outbox.outbox_id: the id the outcomes file names
    plan_date: date
    club_id: str
    customer_id: str
    first_name: str
    phone: str
    phase: str
    step: int
    attempt: int  # 1 for a first call, 2 for the call after a 'no answer'...
    offer: str
    script: str
    lifetime_revenue: float
    rfm_segment: str
    expected_value: float
    best_time: str  # the member's usual visit time (HH:MM, local) or the send window


LIST_COLUMNS = tuple(Call.__dataclass_fields__) + OUTCOME_COLUMNS


def _exists(conn: psycopg.Connection, schema: str, relation: str) -> bool:
    return conn.execute(
        "select to_regclass(%s)", (f'"{schema}"."{relation}"',)
    ).fetchone()[0] is not None


def call_list(
    url: str, rules: Rules, plan_date: date, settings: Settings, club: str | None = None
) -> list[Call]:
    """The calls planned for ``plan_date`` that are still to make (of one club, or all), by
    club, then expected value (lifetime revenue x the step's offer margin), highest first.

    A call withdrawn after planning (the customer opted out, the phone died) is expired here
    first, as dispatch expires a message, and is not listed.
    """
    window = rules.policy.send_window
    any_time = f"{window.start:%H:%M}-{window.end:%H:%M}"
    with psycopg.connect(url) as conn:
        withdrawn = skip_suppressed(conn)
        if withdrawn:
            log.info("%d planned calls withdrawn (opt-out, suppression or dead phone)", withdrawn)
        conn.commit()
        facts = facts_table(settings)
        habit = sql.SQL("null::integer")
        join = sql.SQL("")
        if _exists(conn, settings.dbt_schema, SEND_HOUR_RELATION):
            habit = sql.SQL("h.usual_visit_minute")
            join = sql.SQL(
                "left join {} h on h.customer_id = o.customer_id and h.visits_counted >= %(min)s"
            ).format(sql.Identifier(settings.dbt_schema, SEND_HOUR_RELATION))
        query = sql.SQL(
            """
            select o.outbox_id, o.plan_date, coalesce(f.club_id, '') as club_id, o.customer_id,
                   coalesce(f.first_name, '') as first_name, o.to_address, o.phase, o.step,
                   o.message_key, coalesce(o.offer_code, '') as offer_code, o.body,
                   coalesce(f.lifetime_revenue, 0) as lifetime_revenue,
                   coalesce(f.rfm_segment, '') as rfm_segment, {habit} as usual_minute,
                   1 + (select count(*) from ops.outbox p
                        where p.message_key = o.message_key and p.channel = 'call'
                          and p.status = 'failed' and p.last_error = %(no_answer)s
                          and p.plan_date < o.plan_date) as attempt
            from ops.outbox o
            left join {facts} f on f.customer_id = o.customer_id
            {join}
            where o.plan_date = %(d)s and o.channel = 'call' and o.status = 'planned'
              and (%(club)s::text is null or coalesce(f.club_id, '') = %(club)s)
            """
        ).format(habit=habit, facts=facts, join=join)
        rows = conn.cursor(row_factory=dict_row).execute(query, {
            "d": plan_date, "club": club, "no_answer": CALL_NO_ANSWER,
            "min": rules.policy.send_time.min_visits,
        }).fetchall()
    calls = []
    for r in rows:
        phase = rules.phase(r["phase"])
        margin = 1.0
        if phase is not None and r["step"] <= len(phase.steps):
            margin = phase.steps[r["step"] - 1].offer.margin
        revenue = float(r["lifetime_revenue"])
        minute = r["usual_minute"]
        calls.append(Call(
            r["outbox_id"], r["plan_date"], r["club_id"], r["customer_id"], r["first_name"],
            r["to_address"], r["phase"], r["step"], r["attempt"], r["offer_code"], r["body"],
            revenue, r["rfm_segment"], round(revenue * margin, 2),
            f"{minute // 60:02d}:{minute % 60:02d}" if minute is not None else any_time,
        ))
    calls.sort(key=lambda c: (c.club_id, -c.expected_value, c.customer_id))
    return calls


def calls_csv(calls: list[Call]) -> str:
    """The list as CSV, with empty called_at, outcome and note columns for the desk to fill
    in (the file then loads back with ``lifecycle calls load``)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=LIST_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for c in calls:
        writer.writerow({**asdict(c), **dict.fromkeys(OUTCOME_COLUMNS, "")})
    return out.getvalue()


def calls_html(calls: list[Call], plan_date: date, currency: str) -> str:
    """The list as a printable page: one table per club, a line per call, boxes to tick."""
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    env = Environment(
        loader=PackageLoader("lifecycle.calls", "templates"),
        autoescape=select_autoescape(["html", "j2"]),
        undefined=StrictUndefined,
    )
    clubs: dict[str, list[Call]] = {}
    for c in calls:
        clubs.setdefault(c.club_id, []).append(c)
    return env.get_template("call_list.html.j2").render(
        plan_date=plan_date, clubs=clubs, total=len(calls), currency=currency
    )
