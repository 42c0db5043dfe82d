"""How the simulated club answers messages: the response model and the responses it writes.

Every message that went out may cause a response with its phase's probability
(``ResponseModel``): the visit, purchase or membership is written into ``raw.*`` dated within the
phase's attribution window. Only customers who would not have converted in that window anyway
respond, so the effect is incremental by construction and known. Every message may also make
its recipient opt out, the more likely the more messages they got in the last 30 days.
``PolicyResult`` is the tally a policy's run keeps: messages, segments, opt-outs, caused
conversions and their revenue.
"""


from __future__ import annotations

import calendar
import hashlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from typing import Any, Literal

import psycopg
import yaml
from pydantic import BaseModel, ConfigDict, Field

from lifecycle.planning.outbox import customer_zone
from lifecycle.planning.plan import PHASES_IN_ORDER
from lifecycle.rules.compiled import Rules
from lifecycle.settings import Settings

PRODUCT_MONTHS = {"gym_12m": 12, "gym_6m": 6, "gym_3m": 3, "gym_1m": 1}
PRODUCT_PRICE = {"gym_12m": 14400, "gym_6m": 8400, "gym_3m": 4800, "gym_1m": 1800}
ADDONS = (("solarium", 150), ("group_class", 250))
CROSS_SELLS = (("personal_training", 900), ("massage", 1200), ("spa", 1600))


Policy = Literal["lifecycle", "blast"]
BLAST_PHASE = "blast"


@dataclass
class PolicyResult:
    policy: Policy
    customers: int
    days: int
    first_day: date
    last_day: date
    messages: int = 0
    sms: int = 0
    sms_segments: int = 0
    email: int = 0
    messaged_customers: int = 0
    opt_outs: int = 0
    conversions: Counter = field(default_factory=Counter)  # phase -> caused conversions
    revenue: Counter = field(default_factory=Counter)  # phase -> their revenue
    measured: list[dict[str, Any]] = field(default_factory=list)  # phase_uplift, step 0
    seconds: float = 0.0
    seconds_dbt: float = 0.0

    def messages_per_customer_year(self) -> float:
        return self.messages / max(self.customers, 1) * 365 / max(self.days, 1)

    def as_dict(self, settings: Settings) -> dict[str, Any]:
        sms_cost = self.sms_segments * settings.sms_cost
        email_cost = self.email * settings.email_cost
        return {
            "policy": self.policy,
            "customers": self.customers,
            "days": self.days,
            "first_day": self.first_day.isoformat(),
            "last_day": self.last_day.isoformat(),
            "messages": self.messages,
            "messages_per_customer_year": round(self.messages_per_customer_year(), 2),
            "messaged_customers": self.messaged_customers,
            "sms": self.sms,
            "sms_segments": self.sms_segments,
            "email": self.email,
            "sms_cost": round(sms_cost, 2),
            "email_cost": round(email_cost, 2),
            "cost": round(sms_cost + email_cost, 2),
            "currency": settings.currency,
            "opt_outs": self.opt_outs,
            "conversions": {p: self.conversions.get(p, 0) for p in PHASES_IN_ORDER},
            "revenue": {p: round(float(self.revenue.get(p, 0)), 2) for p in PHASES_IN_ORDER},
            "conversions_total": sum(self.conversions.values()),
            "revenue_total": round(float(sum(self.revenue.values())), 2),
            "measured_uplift": self.measured,
            "seconds": round(self.seconds, 1),
            "seconds_dbt": round(self.seconds_dbt, 1),
        }


def stable_uniform(*parts: object) -> float:
    """A uniform draw in [0, 1) fixed by its parts (seed, day, customer, what)."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


class ResponseModel(BaseModel):
    """How simulated customers respond (``lifecycle simulate --model FILE``, YAML)."""

    model_config = ConfigDict(extra="forbid")
    respond: dict[str, float] = Field(
        default_factory=lambda: {
            "activation": 0.15,
            "stimulation": 0.08,
            "cross_sell": 0.05,
            "retention": 0.10,
            "return": 0.05,
        },
        description="Probability that a phase's message causes its conversion (of those who "
        "would not have converted anyway)",
    )
    blast_respond: float = Field(
        default=0.01,
        ge=0,
        le=1,
        description="Probability that a blast SMS makes a member due to renew (ending within "
        "45 days) or lapsed buy a membership; others have no use for the offer",
    )
    opt_out: float = Field(default=0.002, ge=0, le=1, description="Opt-out per message")
    annoyance: float = Field(
        default=0.5,
        ge=0,
        description="Each further message in the last 30 days multiplies opt-out by 1 + this",
    )
    max_lag_days: int = Field(
        default=7, ge=1, description="A response comes 1..this many days after the message"
    )
    blast_per_month: tuple[int, int] = Field(
        default=(3, 6), description="Blast campaign days per month (low, high), both included"
    )
    # Assumptions, stated: by default neither idea gets an effect of its own (1.0), so a
    # simulation shows what the rules do, not what we hoped; set them to try a hypothesis.
    habit_timed_factor: float = Field(
        default=1.0,
        ge=0,
        description="Multiplies the response probability of a message due at the member's "
        "habit time (policy.send_time habit: send_at not at the window's start)",
    )
    next_best_factor: float = Field(
        default=1.0,
        ge=0,
        description="Multiplies the response probability of a look-alike offer "
        "(offer_source next_best); the purchase is then the offered service",
    )


def load_response_model(path: Path | None) -> ResponseModel:
    if path is None:
        return ResponseModel()
    return ResponseModel.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")) or {})


def _latest_memberships(conn: psycopg.Connection, ids: list[str], day: date) -> dict[str, tuple]:
    """customer -> (product, ends_on) of the latest membership bought by ``day``."""
    rows = conn.execute(
        """
        select distinct on (customer_id) customer_id, product, ends_on
        from raw.memberships
        where customer_id = any(%s) and status <> 'cancelled' and purchased_on <= %s
        order by customer_id, purchased_on desc, membership_id desc
        """,
        (ids, day),
    ).fetchall()
    return {c: (p, e) for c, p, e in rows}


def _converts_anyway(
    conn: psycopg.Connection, phase: str, ids: list[str], day: date, until: dict[str, date]
) -> set[str]:
    """Customers whose own (generated) behaviour converts them in (day, until[customer]]."""
    if not ids:
        return set()
    ends = [until[c] for c in ids]
    if phase == "activation":
        query = (
            "select distinct t.c from unnest(%s::text[], %s::date[]) t(c, e) join raw.visits v "
            "on v.customer_id = t.c and v.visited_at::date > %s and v.visited_at::date <= t.e"
        )
    elif phase in ("stimulation", "cross_sell"):
        category = "addon" if phase == "stimulation" else "cross_sell"
        query = (
            "select distinct t.c from unnest(%s::text[], %s::date[]) t(c, e) join raw.purchases p "
            "on p.customer_id = t.c and p.purchased_at::date > %s and p.purchased_at::date <= t.e "
            f"join raw.services s on s.service = p.service and s.category = '{category}'"
        )
    else:
        query = (
            "select distinct t.c from unnest(%s::text[], %s::date[]) t(c, e) "
            "join raw.memberships m on m.customer_id = t.c and m.status <> 'cancelled' "
            "and m.purchased_on > %s and m.purchased_on <= t.e"
        )
    return {r[0] for r in conn.execute(query, (ids, ends, day))}


@dataclass
class _Responses:
    visits: list[tuple] = field(default_factory=list)
    purchases: list[tuple] = field(default_factory=list)
    memberships: list[tuple] = field(default_factory=list)
    suppressions: list[tuple] = field(default_factory=list)


def respond(
    conn: psycopg.Connection,
    day: date,
    rules: Rules,
    model: ResponseModel,
    seed: int,
    result: PolicyResult,
    settings: Settings,
) -> None:
    """Draw the responses and opt-outs to the day's sent messages and write them into raw/ops."""
    rows = conn.execute(
        "select customer_id, phase, channel, send_at, offer_code, offer_source from ops.outbox "
        "where plan_date = %s and status = 'sent' order by customer_id",
        (day,),
    ).fetchall()
    if not rows:
        return
    sent = [(c, phase, channel) for c, phase, channel, _, _, _ in rows]
    ids = [c for c, _, _ in sent]
    zones = dict(
        conn.execute(
            "select customer_id, timezone from analytics.stg_club__customers "
            "where customer_id = any(%s)",
            (ids,),
        ).fetchall()
    )
    latest = _latest_memberships(conn, ids, day)
    # customer -> (probability factor, the offered service when it is a look-alike offer)
    window_start = rules.policy.send_window.start
    boost: dict[str, tuple[float, str | None]] = {}
    for c, _, _, send_at, offer_code, offer_source in rows:
        factor = 1.0
        local = send_at.astimezone(customer_zone(zones.get(c), settings.club_timezone))
        if local.time() != window_start:
            factor *= model.habit_timed_factor
        if offer_source == "next_best":
            factor *= model.next_best_factor
        boost[c] = (factor, offer_code if offer_source == "next_best" else None)
    recent = Counter(
        dict(
            conn.execute(
                "select customer_id, count(*) from ops.outbox where customer_id = any(%s) "
                "and status = 'sent' and plan_date > %s and plan_date <= %s group by 1",
                (ids, day - timedelta(days=30), day),
            ).fetchall()
        )
    )
    out = _Responses()
    by_phase: dict[str, list[str]] = defaultdict(list)
    for customer_id, phase, channel in sent:
        n30 = max(recent.get(customer_id, 1), 1)
        p_out = min(1.0, model.opt_out * (1 + model.annoyance * (n30 - 1)))
        if stable_uniform(seed, day, customer_id, "opt_out") < p_out:
            out.suppressions.append((customer_id, channel))
        if phase == BLAST_PHASE:
            current = latest.get(customer_id)
            if current is None:
                continue
            to_end = (current[1] - day).days
            if 0 <= to_end <= 45:
                by_phase["retention"].append(customer_id)
            elif to_end < 0:
                by_phase["return"].append(customer_id)
        else:
            by_phase[phase].append(customer_id)
    windows = {p.name: p.phase for p in rules.phases}
    for phase, customers in by_phase.items():
        if result.policy == "blast":
            probability = model.blast_respond
            days = 30 if phase == "return" else None
        else:
            probability = model.respond.get(phase, 0.0)
            days = windows[phase].conversion_days() if phase in windows else 30
        grace = windows[phase].conversion.grace_days if phase in windows else 7
        until: dict[str, date] = {}
        for c in customers:
            if days is not None:
                until[c] = day + timedelta(days=days)
            elif c in latest:
                until[c] = latest[c][1] + timedelta(days=grace)
        customers = [c for c in customers if c in until and until[c] > day]
        anyway = _converts_anyway(conn, phase, customers, day, until)
        for c in customers:
            factor, offered = boost.get(c, (1.0, None))
            if c in anyway or stable_uniform(seed, day, c, phase, "respond") >= min(
                1.0, probability * factor
            ):
                continue
            span = (until[c] - day).days
            if phase == "retention":
                span = min(span, max((latest[c][1] - day).days, 1))
            lag = 1 + int(stable_uniform(seed, day, c, "lag") * min(model.max_lag_days, span))
            on = day + timedelta(days=lag)
            tz = customer_zone(zones.get(c), settings.club_timezone)
            at = datetime.combine(on, dtime(18, 0), tzinfo=tz)
            rid = f"sim-{day.isoformat()}-{phase}-{c}"
            amount: float
            if phase == "activation":
                out.visits.append((rid, c, at))
                amount = 0.0
            elif phase in ("stimulation", "cross_sell"):
                options = ADDONS if phase == "stimulation" else CROSS_SELLS
                service, amount = options[int(stable_uniform(seed, c, day, "svc") * len(options))]
                prices = dict(options)
                if offered in prices:  # a look-alike offer is bought as offered
                    service, amount = offered, prices[offered]
                out.purchases.append((rid, c, service, at, amount))
            else:
                product = latest[c][0] if c in latest else "gym_1m"
                product = product if product in PRODUCT_MONTHS else "gym_1m"
                starts = latest[c][1] + timedelta(days=1) if phase == "retention" else on
                starts = max(starts, on)
                ends = _add_months(starts, PRODUCT_MONTHS[product]) - timedelta(days=1)
                amount = float(PRODUCT_PRICE[product])
                out.memberships.append((rid, c, product, on, starts, ends, amount, "active"))
            result.conversions[phase] += 1
            result.revenue[phase] += amount
    _write_responses(conn, out)


def _add_months(d: date, months: int) -> date:
    y, m = divmod(d.month - 1 + months, 12)
    year, month = d.year + y, m + 1
    return date(year, month, min(d.day, calendar.monthrange(year, month)[1]))


def _write_responses(conn: psycopg.Connection, out: _Responses) -> None:
    with conn.cursor() as cur:
        if out.visits:
            with cur.copy("copy raw.visits (visit_id, customer_id, visited_at) from stdin") as cp:
                for row in out.visits:
                    cp.write_row(row)
        if out.purchases:
            with cur.copy(
                "copy raw.purchases (purchase_id, customer_id, service, purchased_at, amount) "
                "from stdin"
            ) as cp:
                for row in out.purchases:
                    cp.write_row(row)
        if out.memberships:
            with cur.copy(
                "copy raw.memberships (membership_id, customer_id, product, purchased_on, "
                "starts_on, ends_on, price, status) from stdin"
            ) as cp:
                for row in out.memberships:
                    cp.write_row(row)
        for customer_id, channel in out.suppressions:
            cur.execute(
                "insert into ops.suppressions (customer_id, channel, reason, source) "
                "values (%s, %s, 'opted_out', 'simulation') on conflict do nothing",
                (customer_id, channel),
            )
    conn.commit()
