"""AS IS vs TO BE: a synthetic club lived day by day under the lifecycle rules or a blast.

The club's own behaviour is the generator's (``lifecycle.data.club``), loaded whole: visits,
renewals, lapses and returns happen as they would with no marketing at all. Messages add to
it. Each day of the simulation:

1. ``lifecycle`` policy: dbt builds the models planning reads (customer_facts and what it
   is made of, customer_service_purchases) as of the day, then the real ``planning.plan_day``
   and ``pipeline.send_due`` (sandbox transport, logical clock) run. ``blast`` policy (the AS
   IS): on the month's campaign days (3-6 a month) every member with a usable phone gets the
   same membership SMS through the same outbox and dispatch; a purchase does not stop it.
2. The providers answer (``provider_outcomes``): a message to a contact the club's decay
   has killed (``lifecycle.data.decay``) bounces or is undelivered, which marks the address
   dead (planning skips it from then on); any other is delivered.
3. Every message that went out may cause a response with the phase's probability
   (``ResponseModel``): the visit, purchase or membership is written into ``raw.*`` dated
   within the phase's attribution window, so the next days' dbt builds and facts see it. Only
   customers who would not have converted in that window anyway respond (the response is
   incremental by construction), so the measured uplift against the control group can be
   checked against what the simulation caused.
4. Every message may make its recipient opt out (``ops.suppressions``, channel), more likely
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
import csv
import hashlib
import io
import json
import os
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

from lifecycle.insight.responses import (
    BLAST_PHASE,
    Policy,
    PolicyResult,
    ResponseModel,
    call_outcome,
    default_response_model,
    respond,
)
from lifecycle.planning.outbox import customer_zone, plan_day, send_times
from lifecycle.rules import sms
from lifecycle.rules.compiled import Rules
from lifecycle.rules.loading import load_rules
from lifecycle.settings import Settings, get_settings
from lifecycle.transform.dbt_vars import phase_vars
from lifecycle.transform.inprocess import InProcessDbt
from lifecycle.warehouse.priority import backends_niced_like_me

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
# ...and those planning reads when the rules ask for them (offers from: next_best_offer,
# policy.send_time habit)
NEXT_BEST_MODELS = ("customer_next_best_offer",)
SEND_HOUR_MODELS = ("customer_send_hour",)
FINAL_MODELS = ("+phase_uplift",)
BLAST_MODELS = ("+stg_club__customers", "+stg_club__consents")



def daily_models(rules: Rules) -> tuple[str, ...]:
    """The models a simulated day builds for these rules, in build order."""
    models = DAILY_MODELS
    if rules.uses_next_best_offer():
        models += NEXT_BEST_MODELS
    if rules.policy.send_time.mode == "habit":
        models += SEND_HOUR_MODELS
    return models


BLAST_TEXT = "Абонемент зі знижкою 10% лише цього тижня! Деталі на ресепшн."
# generator: product -> months, price; services by category with single-visit prices
HISTORY_DAYS = 540  # the club's past before the first simulated day
FUTURE_DAYS = 60  # organic data beyond the last day: "would they have converted anyway"



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


def _sent_totals(conn: psycopg.Connection, result: PolicyResult) -> None:
    rows = conn.execute(
        "select channel, body, count(*) from ops.outbox where status = 'sent' group by 1, 2"
    ).fetchall()
    for channel, body, n in rows:
        result.messages += n
        if channel == "sms":
            result.sms += n
            result.sms_segments += n * sms.segments(body)
        elif channel == "email":
            result.email += n
    # every call made costs the desk's time, answered or not
    result.calls = conn.execute(
        "select count(*) from ops.message_events where provider = 'call_centre'"
    ).fetchone()[0]
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


def provider_outcomes(url: str, day: date, seed: int, settings: Settings) -> dict[str, int]:
    """What the providers would report about the day's sent SMS and email, written through
    the real webhook parsers and writer: a message to a contact the club's decay has killed
    (``lifecycle.data.decay``, by the time since the customer's last visit) bounces (SendGrid
    ``bounce``) or is undelivered (Twilio error 30005, unknown handset), which marks the
    address dead so later plans skip it; any other is delivered, which confirms the contact.
    Returns the events written by type."""
    from starlette.datastructures import FormData

    from lifecycle.contacts import CHANNEL_KIND, normalize
    from lifecycle.data.decay import curve, is_dead
    from lifecycle.delivery.webhooks import sendgrid, twilio
    from lifecycle.delivery.webhooks.events import write_events

    with psycopg.connect(url) as conn:
        rows = conn.execute(
            """
            select o.outbox_id, o.channel, o.to_address, o.send_at,
                   (%(d)s - greatest(c.created_at::date, max(v.visited_at)::date)) / 365.25
            from ops.outbox o
            join raw.customers c on c.customer_id = o.customer_id
            left join raw.visits v on v.customer_id = o.customer_id and v.visited_at < %(end)s
            where o.plan_date = %(d)s and o.status = 'sent' and o.channel in ('sms', 'email')
            group by o.outbox_id, o.channel, o.to_address, o.send_at, c.created_at
            order by o.outbox_id
            """,
            {"d": day, "end": datetime.combine(day + timedelta(days=1), datetime.min.time(), UTC)},
        ).fetchall()
    events = []
    batch = []
    points = curve(settings)
    for outbox_id, channel, address, due_at, years in rows:
        dead = is_dead(seed, CHANNEL_KIND[channel], normalize(CHANNEL_KIND[channel], address),
                       float(years or 0), points)
        # a minute after the message was due: a replayed day's sent_at is the logical clock's
        # end of the day (pipeline.logical_now), after the day a report should count for
        at = due_at + timedelta(minutes=1)
        if channel == "sms":
            params = {"MessageSid": f"SMsim{outbox_id:027d}", "To": address,
                      "MessageStatus": "undelivered" if dead else "delivered"}
            if dead:
                params["ErrorCode"] = "30005"
            event = twilio.status_event(FormData(params), str(outbox_id), at)
            if event is not None:
                events.append(event)
        else:
            item = {"event": "bounce" if dead else "delivered", "email": address,
                    "timestamp": int(at.timestamp()), "outbox_id": str(outbox_id),
                    "sg_message_id": f"sim{outbox_id}.filter"}
            if dead:
                item.update(type="bounce", reason="550 5.1.1 no such user")
            batch.append(item)
    if batch:
        events += sendgrid.parse_batch(json.dumps(batch).encode())[0]
    if not events:
        return {}
    return write_events(url, events, settings=settings).by_type


def make_calls(url: str, day: date, rules: Rules, model: ResponseModel, seed: int,
               settings: Settings, workdir: Path) -> int:
    """The front desk's day: the call list of ``day``, each call's outcome drawn from the
    model, loaded back as an outcomes file (`lifecycle calls load`). Returns the calls made."""
    from lifecycle.calls.listing import call_list, calls_csv
    from lifecycle.calls.outcomes import load_outcomes

    calls = call_list(url, rules, day, settings)
    if not calls:
        return 0
    rows = list(csv.DictReader(io.StringIO(calls_csv(calls))))
    noon = datetime.combine(day, dtime(12, 0), tzinfo=customer_zone(None, settings.club_timezone))
    for row, call in zip(rows, calls, strict=True):
        row["called_at"] = noon.isoformat()
        row["outcome"] = call_outcome(model, seed, day, call.call_id)
    path = workdir / f"calls-{day.isoformat()}.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    load_outcomes(url, path)
    return len(calls)


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
    if policy not in POLICIES:
        raise ValueError(f"unknown policy '{policy}'; valid: {', '.join(POLICIES)}")
    settings = (settings or get_settings()).model_copy(update={"transport": "sandbox"})
    model = model or default_response_model()
    rules = load_rules(settings.rules_path)
    began = time.monotonic()
    last_day = first_day + timedelta(days=days - 1)
    db = f"lifecycle_sim_{policy}_{os.getpid()}"
    url = _fresh_database(server_url, db)
    result = PolicyResult(policy, customers, days, first_day, last_day)
    try:
        with backends_niced_like_me(url):  # `nice lifecycle simulate` reaches its SQL too
            _live(url, result, seed=seed, model=model, settings=settings, rules=rules,
                  progress=progress)
    finally:
        if not keep_database:
            drop_database(server_url, db)
    result.seconds = time.monotonic() - began
    return result


def _live(url: str, result: PolicyResult, *, seed: int, model: ResponseModel,
          settings: Settings, rules: Rules, progress: Callable[[date, int], None] | None) -> None:
    """``simulate_policy``'s days (``result``'s policy, club size and days) in the policy's
    database ``url``."""
    from lifecycle.data.generator import generate
    from lifecycle.pipeline import send_due
    from lifecycle.transform import dbt
    from lifecycle.warehouse.migrations import migrate

    policy, customers, days = result.policy, result.customers, result.days
    first_day, last_day = result.first_day, result.last_day
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
        runner = InProcessDbt(url, settings, phase_vars(rules), Path(target) / "daily")
        if policy == "lifecycle":
            # everything once, as the daily run builds it (seeds, staging, marts, data
            # tests), on the runner's manifest: no second dbt start-up and parse
            built = runner.invoke("build", first_day, "--exclude-resource-type", "unit_test")
            if not built.success:
                raise dbt.DbtError(f"dbt build as of {first_day} failed: "
                                   f"{built.exception or built.result}")
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
                        runner.run(day, daily_models(rules))
                        result.seconds_dbt += time.monotonic() - t
                    # a simulated backlog day is intended volume, never a bad load
                    plan_day(url, rules, day, settings, allow_volume=True)
                elif day in campaign:
                    _plan_blast(conn, day, rules, settings)
                send_due(url, day, clock="logical", settings=settings)
                provider_outcomes(url, day, seed, settings)
                if policy == "lifecycle":
                    make_calls(url, day, rules, model, seed, settings, Path(target))
                respond(conn, day, rules, model, seed, result, settings)
                if progress is not None:
                    progress(day, i + 1)
            _sent_totals(conn, result)
            if policy == "lifecycle":
                t = time.monotonic()
                runner.run(last_day, FINAL_MODELS)
                result.seconds_dbt += time.monotonic() - t
                result.measured = _measured(conn, settings.dbt_schema)


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
    model = model or default_response_model()
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
