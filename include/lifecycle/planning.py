"""Plan one logical date: phase audiences -> arbitration -> outbox rows and skip rows.

Planning for date D reads ``customer_facts`` built as of D and the outbox of earlier days, and
writes only D's rows, in one transaction. Inserts ignore conflicts, so planning D twice changes
nothing (DESIGN.md #3, #4).
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from lifecycle.facts import FACTS_RELATION, TEMPLATE_FIELDS
from lifecycle.rules import CompiledPhase, CompiledStep, Rules, in_control_group, render
from lifecycle.settings import Settings, get_settings


class PlanningError(RuntimeError):
    pass


PHASES_IN_ORDER = ("activation", "stimulation", "cross_sell", "retention", "return")

# Skip reasons (README "Skip reasons").
CONTROL_GROUP = "control_group"
ALREADY_SENT = "already_sent"
ALREADY_PLANNED_TODAY = "already_planned_today"
NO_CONTACT = "no_contact"
NO_CONSENT = "no_consent"
CAPPED = "capped"
LOWER_PRIORITY = "lower_priority"


@dataclass(frozen=True)
class Candidate:
    phase: CompiledPhase
    step: CompiledStep
    facts: dict[str, Any]

    @property
    def customer_id(self) -> str:
        return self.facts["customer_id"]

    @property
    def cycle_key(self) -> str:
        return self.facts.get("membership_id") or "none"

    @property
    def message_key(self) -> str:
        return message_key(self.customer_id, self.phase.name, self.step.number, self.cycle_key)


def message_key(customer_id: str, phase: str, step: int, cycle_key: str) -> str:
    """Deterministic key of a phase step for one membership cycle of one customer."""
    raw = f"{customer_id}|{phase}|{step}|{cycle_key}"
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


@dataclass
class PlanReport:
    plan_date: date
    eligible: Counter = field(default_factory=Counter)  # (phase, step) -> customers
    planned: Counter = field(default_factory=Counter)  # (phase, channel) -> messages
    skipped: Counter = field(default_factory=Counter)  # reason -> rows
    inserted_messages: int = 0
    inserted_skips: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "plan_date": self.plan_date.isoformat(),
            "eligible": {f"{p}:{s}": n for (p, s), n in sorted(self.eligible.items())},
            "planned": {f"{p}:{c}": n for (p, c), n in sorted(self.planned.items())},
            "skipped": dict(sorted(self.skipped.items())),
            "inserted_messages": self.inserted_messages,
            "inserted_skips": self.inserted_skips,
        }


def facts_table(settings: Settings) -> sql.Composable:
    return sql.Identifier(settings.dbt_schema, FACTS_RELATION)


def select_candidates(
    conn: psycopg.Connection, rules: Rules, plan_date: date, settings: Settings
) -> list[Candidate]:
    """Every (customer, phase, step) the rules select from customer_facts as of ``plan_date``."""
    table = facts_table(settings)
    built = conn.execute(
        sql.SQL("select min(as_of_date), max(as_of_date), count(*) from {}").format(table)
    ).fetchone()
    if built is None or built[2] == 0:
        return []
    if built[0] != plan_date or built[1] != plan_date:
        raise PlanningError(
            f"{settings.dbt_schema}.{FACTS_RELATION} is built as of {built[0]}, not {plan_date}: "
            f"build dbt for {plan_date} first (`lifecycle run --date {plan_date}` does both)"
        )
    out: list[Candidate] = []
    for phase in rules.phases:
        for step in phase.steps:
            query = sql.SQL("select * from {} where {} order by customer_id").format(
                table, step.condition.sql
            )
            cur = conn.cursor(row_factory=dict_row)
            for row in cur.execute(query, step.condition.params):
                out.append(Candidate(phase, step, row))
    return out


def _tz(name: str | None, default: str) -> ZoneInfo:
    try:
        return ZoneInfo(name or default)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo(default)


def send_times(
    plan_date: date, tz: ZoneInfo, rules: Rules, deadline_hours: int
) -> tuple[datetime, datetime, datetime]:
    """(send_at, window_end_at, deadline_at) for a message planned on ``plan_date``."""
    window = rules.policy.send_window
    start = datetime.combine(plan_date, window.start, tzinfo=tz)
    end = datetime.combine(plan_date, window.end, tzinfo=tz)
    return start, end, start + timedelta(hours=deadline_hours)


def _history(conn: psycopg.Connection, customer_ids: list[str], plan_date: date, days: int):
    """Live message keys of these customers, their message days before D, and D's rows."""
    keys: set[str] = set()
    days_by_customer: dict[str, list[date]] = defaultdict(list)
    today: dict[str, str] = {}
    rows = conn.execute(
        """
        select customer_id, message_key, plan_date, status
        from ops.outbox
        where customer_id = any(%s)
        """,
        (customer_ids,),
    )
    since = plan_date - timedelta(days=days)
    for customer_id, key, day, status in rows:
        if day == plan_date:
            today[customer_id] = key
            continue
        if status in ("planned", "claimed", "sent", "unknown"):
            keys.add(key)
            if since <= day < plan_date:
                days_by_customer[customer_id].append(day)
    return keys, days_by_customer, today


def _channel_for(c: Candidate) -> tuple[str | None, str | None]:
    """(channel, None) for the first reachable channel in preference order, else (None, reason)."""
    facts = c.facts
    reason = NO_CONTACT
    for ch in c.phase.phase.channels:
        if facts.get(f"{ch}_contactable"):
            return ch, None
        valid = facts.get("phone_valid" if ch == "sms" else "email_valid")
        if valid:
            reason = NO_CONSENT
    return None, reason


def arbitrate(
    candidates: list[Candidate], rules: Rules, plan_date: date, history
) -> tuple[list[tuple[Candidate, str]], list[tuple[Candidate, str]]]:
    """Decide per customer: ([(candidate, channel) to send], [(candidate, skip reason)])."""
    keys, days_by_customer, today = history
    caps = rules.policy.frequency_caps
    cg = rules.policy.control_group
    by_customer: dict[str, list[Candidate]] = defaultdict(list)
    for c in candidates:
        by_customer[c.customer_id].append(c)
    chosen: list[tuple[Candidate, str]] = []
    skips: list[tuple[Candidate, str]] = []
    for customer_id, cands in by_customer.items():
        cands.sort(key=lambda c: (c.phase.phase.priority, c.step.number))
        if in_control_group(customer_id, cg.percent, cg.salt):
            skips.extend((c, CONTROL_GROUP) for c in cands)
            continue
        if customer_id in today:
            skips.extend(
                (c, ALREADY_PLANNED_TODAY) for c in cands if c.message_key != today[customer_id]
            )
            continue
        sent_days = days_by_customer.get(customer_id, [])
        capped = any(
            sum(1 for d in sent_days if d > plan_date - timedelta(days=cap.days)) >= cap.max
            for cap in caps
        )
        decided = False
        for c in cands:
            if decided:
                skips.append((c, LOWER_PRIORITY))
            elif c.message_key in keys:
                skips.append((c, ALREADY_SENT))
            elif capped:
                skips.append((c, CAPPED))
            else:
                channel, reason = _channel_for(c)
                if channel is None:
                    skips.append((c, reason))
                else:
                    chosen.append((c, channel))
                    decided = True
    return chosen, skips


def _message_row(
    c: Candidate, channel: str, plan_date: date, rules: Rules, settings: Settings
) -> dict:
    context = {k: c.facts.get(k) for k in TEMPLATE_FIELDS}
    context["offer"] = c.step.offer.model_dump()
    tz = _tz(c.facts.get("timezone"), settings.club_timezone)
    send_at, window_end, deadline = send_times(plan_date, tz, rules, settings.send_deadline_hours)
    if channel == "sms":
        to, subject, body = c.facts["phone"], None, render(c.step.templates.sms, context)
    else:
        tmpl = c.step.templates.email
        to, subject, body = (
            c.facts["email"],
            render(tmpl.subject, context),
            render(tmpl.body, context),
        )
    return {
        "message_key": c.message_key,
        "plan_date": plan_date,
        "customer_id": c.customer_id,
        "phase": c.phase.name,
        "step": c.step.number,
        "cycle_key": c.cycle_key,
        "channel": channel,
        "variant": "A",
        "to_address": to,
        "subject": subject,
        "body": body,
        "send_at": send_at,
        "window_end_at": window_end,
        "deadline_at": deadline,
    }


_MESSAGE_COLUMNS = (
    "message_key",
    "plan_date",
    "customer_id",
    "phase",
    "step",
    "cycle_key",
    "channel",
    "variant",
    "to_address",
    "subject",
    "body",
    "send_at",
    "window_end_at",
    "deadline_at",
)


def plan_day(
    url: str, rules: Rules, plan_date: date, settings: Settings | None = None
) -> PlanReport:
    """Plan ``plan_date``: write its outbox and skip rows (idempotent). Returns the counts."""
    settings = settings or get_settings()
    report = PlanReport(plan_date)
    with psycopg.connect(url) as conn:
        # Planning a date is serialised: two planners of one day would race on arbitration.
        conn.execute("select pg_advisory_xact_lock(727002, %s)", (plan_date.toordinal(),))
        candidates = select_candidates(conn, rules, plan_date, settings)
        for c in candidates:
            report.eligible[(c.phase.name, c.step.number)] += 1
        longest = max((cap.days for cap in rules.policy.frequency_caps), default=1)
        history = _history(conn, sorted({c.customer_id for c in candidates}), plan_date, longest)
        chosen, skips = arbitrate(candidates, rules, plan_date, history)
        messages = [_message_row(c, ch, plan_date, rules, settings) for c, ch in chosen]
        for m in messages:
            report.planned[(m["phase"], m["channel"])] += 1
        for _, reason in skips:
            report.skipped[reason] += 1
        with conn.cursor() as cur:
            if messages:
                cur.execute(
                    "create temp table _plan (like ops.outbox including defaults) on commit drop"
                )
                cols = sql.SQL(", ").join(map(sql.Identifier, _MESSAGE_COLUMNS))
                with cur.copy(sql.SQL("copy _plan ({}) from stdin").format(cols)) as copy:
                    for m in messages:
                        copy.write_row([m[k] for k in _MESSAGE_COLUMNS])
                cur.execute(
                    sql.SQL(
                        "insert into ops.outbox ({cols}) select {cols} from _plan "
                        "order by customer_id on conflict do nothing"
                    ).format(cols=cols)
                )
                report.inserted_messages = cur.rowcount
            if skips:
                cur.execute(
                    "create temp table _skips (like ops.skips including defaults) on commit drop"
                )
                with cur.copy(
                    "copy _skips (plan_date, customer_id, phase, step, reason) from stdin"
                ) as copy:
                    for c, reason in skips:
                        copy.write_row(
                            (plan_date, c.customer_id, c.phase.name, c.step.number, reason)
                        )
                cur.execute(
                    "insert into ops.skips (plan_date, customer_id, phase, step, reason) "
                    "select plan_date, customer_id, phase, step, reason from _skips "
                    "on conflict do nothing"
                )
                report.inserted_skips = cur.rowcount
    return report
