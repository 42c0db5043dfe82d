"""AS IS vs TO BE: a synthetic club lived day by day under the lifecycle rules or a blast.

The club's own behaviour is the generator's (``lifecycle.generator``), loaded whole: visits,
renewals, lapses and returns happen as they would with no marketing at all. Messages add to
it. Each day of the simulation:

1. ``lifecycle`` policy: dbt builds the models planning reads (customer_facts and what it
   is made of, customer_service_purchases) as of the day, then the real ``planning.plan_day``
   and ``pipeline.send_due`` (sandbox transport, logical clock) run. ``blast`` policy (the AS
   IS): on the month's campaign days (3-6 a month) every member with a usable phone gets the
   same membership SMS through the same outbox and dispatch; a purchase does not stop it.
2. Every message that went out may cause a response with the phase's probability
   (``ResponseModel``): the visit, purchase or membership is written into ``raw.*`` dated
   within the phase's attribution window, so the next days' dbt builds and facts see it. Only
   customers who would not have converted in that window anyway respond (the response is
   incremental by construction), so the measured uplift against the control group can be
   checked against what the simulation caused.
3. Every message may make its recipient opt out (``ops.suppressions``, channel), more likely
   the more messages they got in the last 30 days; planning and dispatch then respect it.

Speed: ``dbt build`` in a subprocess costs ~8-12 s a day at 10k customers, most of it dbt
starting and re-parsing the project (the vars change every day, which defeats partial
parsing). Here dbt runs in-process (``dbtRunner``) on a manifest parsed once, and builds
each day only the models whose inputs change in a simulation: the same SQL, materialisations
and hooks as the daily run. Not built daily: seeds and the customer/consent staging tables
(their raw tables never change here), and the marts planning does not read (eligibility
history, metrics); tests and unit tests are not run. The conversion marts are built once at
the end.
"""

from __future__ import annotations

import calendar
import hashlib
import json
import os
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import psycopg
import yaml
from pydantic import BaseModel, ConfigDict, Field

from lifecycle import sms
from lifecycle.dbt_vars import phase_vars
from lifecycle.planning import PHASES_IN_ORDER, customer_zone, plan_day, send_times
from lifecycle.rules import Rules, load_rules
from lifecycle.settings import Settings, get_settings

Policy = Literal["lifecycle", "blast"]
POLICIES: tuple[Policy, ...] = ("lifecycle", "blast")

# The models planning reads, in build order; their inputs change as responses are written.
DAILY_MODELS = (
    "int_memberships_enriched",
    "int_visits_daily",
    "int_visits_customer",
    "int_purchases_classified",
    "int_customer_sales",
    "int_customer_rfm",
    "customer_service_purchases",
    "customer_facts",
)
FINAL_MODELS = ("+phase_uplift",)
BLAST_MODELS = ("+stg_club__customers", "+stg_club__consents")

BLAST_TEXT = "Абонемент зі знижкою 10% лише цього тижня! Деталі на ресепшн."
BLAST_PHASE = "blast"
# generator: product -> months, price; services by category with single-visit prices
PRODUCT_MONTHS = {"gym_12m": 12, "gym_6m": 6, "gym_3m": 3, "gym_1m": 1}
PRODUCT_PRICE = {"gym_12m": 14400, "gym_6m": 8400, "gym_3m": 4800, "gym_1m": 1800}
ADDONS = (("solarium", 150), ("group_class", 250))
CROSS_SELLS = (("personal_training", 900), ("massage", 1200), ("spa", 1600))
HISTORY_DAYS = 540  # the club's past before the first simulated day
FUTURE_DAYS = 60  # organic data beyond the last day: "would they have converted anyway"


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


def load_response_model(path: Path | None) -> ResponseModel:
    if path is None:
        return ResponseModel()
    return ResponseModel.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")) or {})


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


# --------------------------------------------------------------------------- dbt in-process


class _DailyDbt:
    """dbt in this process on a manifest parsed once: a day's build without dbt's start-up.

    dbt's in-process API keeps global state and is not thread-safe (lifecycle.dbt runs dbt as
    a subprocess for that reason); a simulation calls it from one thread, one day after the
    other, and gives it its own target directory.
    """

    def __init__(self, url: str, rules: Rules, settings: Settings, target: Path) -> None:
        from dbt.cli.main import dbtRunner

        from lifecycle.dbt import cheap_behavior_flag_source, dbt_env

        cheap_behavior_flag_source()

        self.env = {**dbt_env(url, settings), "DBT_TARGET_PATH": str(target)}
        self.env["DBT_LOG_PATH"] = str(target / "logs")
        self.project_dir = settings.dbt_project_dir
        self.vars = phase_vars(rules)
        with self._environment():
            result = dbtRunner().invoke(self._args("parse", None))
        if not result.success:
            raise RuntimeError(f"dbt parse failed: {result.exception}")
        self.runner = dbtRunner(manifest=result.result)

    @contextmanager
    def _environment(self):
        saved = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)
        try:
            yield
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def _args(self, command: str, as_of: date | None, *extra: str) -> list[str]:
        dbt_vars = dict(self.vars)
        if as_of is not None:
            dbt_vars["as_of_date"] = as_of.isoformat()
        return [
            command,
            "--project-dir",
            str(self.project_dir),
            "--profiles-dir",
            str(self.project_dir),
            "--vars",
            json.dumps(dbt_vars),
            "--quiet",
            # manifest.json and run_results.json are not read here: writing them cost ~0.3 s
            # a day (the result comes back in memory)
            "--no-write-json",
            *extra,
        ]

    def run(self, as_of: date, models: tuple[str, ...]) -> None:
        with self._environment():
            result = self.runner.invoke(self._args("run", as_of, "--select", *models))
        if not result.success:
            raise RuntimeError(f"dbt run as of {as_of} failed: {result.exception or result.result}")


# --------------------------------------------------------------------------- the club


def _fresh_database(server_url: str, name: str) -> str:
    base = server_url.rsplit("/", 1)[0]
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')
        conn.execute(f'create database "{name}"')
    return f"{base}/{name}"


def drop_database(server_url: str, name: str) -> None:
    base = server_url.rsplit("/", 1)[0]
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')


def blast_days(first: date, last: date, seed: int, per_month: tuple[int, int]) -> set[date]:
    """The AS IS campaign days: per_month[0]..per_month[1] random days in each month."""
    rng = np.random.default_rng([seed, 8])
    out: set[date] = set()
    month = date(first.year, first.month, 1)
    while month <= last:
        n_days = calendar.monthrange(month.year, month.month)[1]
        k = int(rng.integers(per_month[0], per_month[1] + 1))
        for d in sorted(rng.choice(n_days, size=min(k, n_days), replace=False)):
            out.add(month + timedelta(days=int(d)))
        month = (month + timedelta(days=32)).replace(day=1)
    return {d for d in out if first <= d <= last}


def _stable_uniform(*parts: object) -> float:
    """A uniform draw in [0, 1) fixed by its parts (seed, day, customer, what)."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _plan_blast(conn: psycopg.Connection, day: date, rules: Rules, settings: Settings) -> int:
    """Outbox rows of a blast day: every member (or lapsed <= 90 days) with a usable phone."""
    rows = conn.execute(
        """
        select c.customer_id, c.phone, c.timezone
        from analytics.stg_club__customers c
        where c.phone_valid
          and c.customer_since <= %(d)s
          and coalesce((select bool_or(opted_in) from analytics.stg_club__consents s
                        where s.customer_id = c.customer_id and s.channel = 'sms'), true)
          and not exists (select 1 from ops.suppressions x
                          where x.customer_id = c.customer_id and x.channel = 'sms')
          and exists (select 1 from raw.memberships m
                      where m.customer_id = c.customer_id and m.status <> 'cancelled'
                        and m.purchased_on <= %(d)s and m.ends_on >= %(d)s - 90)
        order by c.customer_id
        """,
        {"d": day},
    ).fetchall()
    out = []
    for customer_id, phone, tz in rows:
        send_at, window_end, deadline = send_times(
            day, customer_zone(tz, settings.club_timezone), rules, settings.send_deadline_hours
        )
        key = hashlib.sha256(f"{customer_id}|blast|{day}".encode()).hexdigest()[:32]
        out.append(
            (key, day, customer_id, BLAST_PHASE, 1, day.isoformat(), "sms", "A", phone, None,
             BLAST_TEXT, send_at, window_end, deadline)
        )
    with conn.cursor() as cur, cur.copy(
        "copy ops.outbox (message_key, plan_date, customer_id, phase, step, cycle_key, channel, "
        "variant, to_address, subject, body, send_at, window_end_at, deadline_at) from stdin"
    ) as copy:
        for row in out:
            copy.write_row(row)
    conn.commit()
    return len(out)


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


def _respond(
    conn: psycopg.Connection,
    day: date,
    rules: Rules,
    model: ResponseModel,
    seed: int,
    result: PolicyResult,
    settings: Settings,
) -> None:
    """Draw the responses and opt-outs to the day's sent messages and write them into raw/ops."""
    sent = conn.execute(
        "select customer_id, phase, channel from ops.outbox where plan_date = %s "
        "and status = 'sent' order by customer_id",
        (day,),
    ).fetchall()
    if not sent:
        return
    ids = [c for c, _, _ in sent]
    zones = dict(
        conn.execute(
            "select customer_id, timezone from analytics.stg_club__customers "
            "where customer_id = any(%s)",
            (ids,),
        ).fetchall()
    )
    latest = _latest_memberships(conn, ids, day)
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
        if _stable_uniform(seed, day, customer_id, "opt_out") < p_out:
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
            if c in anyway or _stable_uniform(seed, day, c, phase, "respond") >= probability:
                continue
            span = (until[c] - day).days
            if phase == "retention":
                span = min(span, max((latest[c][1] - day).days, 1))
            lag = 1 + int(_stable_uniform(seed, day, c, "lag") * min(model.max_lag_days, span))
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
                service, amount = options[int(_stable_uniform(seed, c, day, "svc") * len(options))]
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


def _sent_totals(conn: psycopg.Connection, result: PolicyResult) -> None:
    rows = conn.execute(
        "select channel, body, count(*) from ops.outbox where status = 'sent' group by 1, 2"
    ).fetchall()
    for channel, body, n in rows:
        result.messages += n
        if channel == "sms":
            result.sms += n
            result.sms_segments += n * sms.segments(body)
        else:
            result.email += n
    result.messaged_customers = conn.execute(
        "select count(distinct customer_id) from ops.outbox where status = 'sent'"
    ).fetchone()[0]
    result.opt_outs = conn.execute(
        "select count(*) from ops.suppressions where source = 'simulation'"
    ).fetchone()[0]


def _measured(conn: psycopg.Connection, schema: str) -> list[dict[str, Any]]:
    cur = conn.execute(
        f'select * from "{schema}".phase_uplift where step = 0 and variant = %s order by phase',
        ("*",),
    )
    names = [d.name for d in cur.description]
    out = []
    for row in cur.fetchall():
        item = dict(zip(names, row, strict=True))
        out.append({k: (float(v) if hasattr(v, "as_integer_ratio") and not isinstance(v, int)
                        else v.isoformat() if isinstance(v, date) else v)
                    for k, v in item.items()})
    return out


def simulate_policy(
    server_url: str,
    policy: Policy,
    *,
    customers: int,
    days: int,
    seed: int,
    first_day: date,
    model: ResponseModel | None = None,
    settings: Settings | None = None,
    keep_database: bool = False,
    progress: Callable[[date, int], None] | None = None,
) -> PolicyResult:
    """Live ``days`` days of a generated club under one policy, in its own database."""
    from lifecycle import dbt
    from lifecycle.generator import generate
    from lifecycle.pipeline import send_due
    from lifecycle.warehouse import migrate

    if policy not in POLICIES:
        raise ValueError(f"unknown policy '{policy}'; valid: {', '.join(POLICIES)}")
    settings = (settings or get_settings()).model_copy(update={"transport": "sandbox"})
    model = model or ResponseModel()
    rules = load_rules(settings.rules_path)
    began = time.monotonic()
    last_day = first_day + timedelta(days=days - 1)
    db = f"lifecycle_sim_{policy}_{os.getpid()}"
    url = _fresh_database(server_url, db)
    result = PolicyResult(policy, customers, days, first_day, last_day)
    try:
        migrate(url)
        generate(
            customers,
            first_day - timedelta(days=HISTORY_DAYS),
            last_day + timedelta(days=FUTURE_DAYS),
            seed,
            url=url,
            club_timezone=settings.club_timezone,
        )
        with tempfile.TemporaryDirectory(prefix="lifecycle-sim-dbt-") as target:
            t = time.monotonic()
            if policy == "lifecycle":
                # everything once, as the daily run builds it (seeds, staging, marts)
                dbt.build(
                    url, first_day, settings=settings, rules=rules, unit_tests=False,
                    target_path=Path(target) / "build",
                )
            runner = _DailyDbt(url, rules, settings, Path(target) / "daily")
            if policy == "blast":
                # the blast reads contacts only (stg_club__customers, stg_club__consents)
                runner.run(first_day, BLAST_MODELS)
            result.seconds_dbt += time.monotonic() - t
            campaign = blast_days(first_day, last_day, seed, model.blast_per_month)
            with psycopg.connect(url) as conn:
                for i in range(days):
                    day = first_day + timedelta(days=i)
                    if policy == "lifecycle":
                        if i > 0:
                            t = time.monotonic()
                            runner.run(day, DAILY_MODELS)
                            result.seconds_dbt += time.monotonic() - t
                        # a simulated backlog day is intended volume, never a bad load
                        plan_day(url, rules, day, settings, allow_volume=True)
                    elif day in campaign:
                        _plan_blast(conn, day, rules, settings)
                    send_due(url, day, clock="logical", settings=settings)
                    _respond(conn, day, rules, model, seed, result, settings)
                    if progress is not None:
                        progress(day, i + 1)
                _sent_totals(conn, result)
                if policy == "lifecycle":
                    t = time.monotonic()
                    runner.run(last_day, FINAL_MODELS)
                    result.seconds_dbt += time.monotonic() - t
                    result.measured = _measured(conn, settings.dbt_schema)
    finally:
        if not keep_database:
            drop_database(server_url, db)
    result.seconds = time.monotonic() - began
    return result


def simulate(
    url: str,
    *,
    customers: int,
    days: int,
    policies: tuple[Policy, ...] = POLICIES,
    seed: int = 42,
    first_day: date | None = None,
    model: ResponseModel | None = None,
    settings: Settings | None = None,
    progress: Callable[[str, date, int], None] | None = None,
) -> dict[str, Any]:
    """Run each policy on the same club; store and return the side-by-side results.

    Each policy lives in its own database on ``url``'s server; the results are written to
    ``url``'s ops.simulations (one row per run), which the report reads.
    """
    settings = settings or get_settings()
    model = model or ResponseModel()
    first_day = first_day or date(2026, 1, 1)
    results: dict[str, Any] = {}
    for policy in policies:
        def tick(day: date, n: int, policy: Policy = policy) -> None:
            if progress is not None:
                progress(policy, day, n)

        res = simulate_policy(
            url, policy, customers=customers, days=days, seed=seed, first_day=first_day,
            model=model, settings=settings, progress=tick,
        )
        results[policy] = res.as_dict(settings)
    run = {
        "customers": customers,
        "days": days,
        "seed": seed,
        "first_day": first_day.isoformat(),
        "model": model.model_dump(mode="json"),
        "sms_cost": settings.sms_cost,
        "email_cost": settings.email_cost,
        "currency": settings.currency,
        "policies": results,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    with psycopg.connect(url) as conn:
        run["simulation_id"] = conn.execute(
            "insert into ops.simulations (customers, days, seed, first_day, results) "
            "values (%s, %s, %s, %s, %s) returning simulation_id",
            (customers, days, seed, first_day, json.dumps(run)),
        ).fetchone()[0]
    return run


def latest_simulation(url: str) -> dict[str, Any] | None:
    """The most recent simulation stored in ops.simulations, or None."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "select results from ops.simulations order by simulation_id desc limit 1"
        ).fetchone()
    return row[0] if row else None
