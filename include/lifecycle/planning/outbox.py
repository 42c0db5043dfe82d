"""Writing the plan: send times in each customer's zone, outbox rows and skip rows, in one
transaction. Inserts ignore conflicts, so planning a day twice changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import psycopg
from psycopg import sql

from lifecycle.planning.arbitration import compute_plan
from lifecycle.planning.plan import (
    CONTROL_GROUP,
    VOLUME_GUARD,
    Candidate,
    Message,
    PlanReport,
    VolumeGuardTripped,
)
from lifecycle.rules.compiled import Rules
from lifecycle.settings import Settings, get_settings

# --------------------------------------------------------------------------- writing


def customer_zone(name: str | None, default: str) -> ZoneInfo:
    """The customer's time zone, the club's when it is empty or unknown."""
    try:
        return ZoneInfo(name or default)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo(default)


# A habit-timed message is due at the latest this long before the window closes, so the
# throttle has time to send a busy hour's messages inside the window.
HABIT_LATEST_BEFORE_END = timedelta(minutes=30)


def send_times(
    plan_date: date,
    tz: ZoneInfo,
    rules: Rules,
    deadline_hours: int,
    usual_minute: int | None = None,
) -> tuple[datetime, datetime, datetime]:
    """(send_at, window_end_at, deadline_at) for a message planned on ``plan_date``.

    ``send_at`` is the window's start, or with policy.send_time habit and the member's usual
    local visit minute, ``lead_minutes`` before it, kept inside the window (from its start to
    30 minutes before its end).
    """
    window = rules.policy.send_window
    start = datetime.combine(plan_date, window.start, tzinfo=tz)
    end = datetime.combine(plan_date, window.end, tzinfo=tz)
    send_at = start
    policy = rules.policy.send_time
    if policy.mode == "habit" and usual_minute is not None:
        usual = datetime.combine(plan_date, datetime.min.time(), tzinfo=tz) + timedelta(
            minutes=usual_minute
        )
        latest = max(start, end - HABIT_LATEST_BEFORE_END)
        send_at = min(max(usual - timedelta(minutes=policy.lead_minutes), start), latest)
    return send_at, end, send_at + timedelta(hours=deadline_hours)


def message_row(m: Message, plan_date: date, rules: Rules, settings: Settings) -> dict:
    c = m.candidate
    tz = customer_zone(c.facts.get("timezone"), settings.club_timezone)
    send_at, window_end, deadline = send_times(
        plan_date, tz, rules, settings.send_deadline_hours, m.usual_minute
    )
    return {
        "message_key": c.message_key,
        "plan_date": plan_date,
        "customer_id": c.customer_id,
        "phase": c.phase.name,
        "step": c.step.number,
        "cycle_key": c.cycle_key,
        "channel": m.channel,
        "variant": m.variant,
        "to_address": m.to_address,
        "subject": m.subject,
        "body": m.body,
        "send_at": send_at,
        "window_end_at": window_end,
        "deadline_at": deadline,
        "offer_code": m.offer_code,
        "offer_source": m.offer_source,
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
    "offer_code",
    "offer_source",
)


def _write_messages(cur: psycopg.Cursor, rows: list[dict]) -> int:
    if not rows:
        return 0
    cur.execute("create temp table _plan (like ops.outbox including defaults) on commit drop")
    cols = sql.SQL(", ").join(map(sql.Identifier, _MESSAGE_COLUMNS))
    with cur.copy(sql.SQL("copy _plan ({}) from stdin").format(cols)) as copy:
        for m in rows:
            copy.write_row([m[k] for k in _MESSAGE_COLUMNS])
    cur.execute(
        sql.SQL(
            "insert into ops.outbox ({cols}) select {cols} from _plan "
            "order by customer_id on conflict do nothing"
        ).format(cols=cols)
    )
    return cur.rowcount


def _write_skips(
    cur: psycopg.Cursor,
    plan_date: date,
    skips: list[tuple[Candidate, str]],
    held: Sequence[Message] = (),
) -> int:
    """Insert the skip rows; a control_group row gets the channel, variant and key of its
    would-have-been message (``held``)."""
    if not skips:
        return 0
    would = {(m.customer_id, m.candidate.phase.name, m.candidate.step.number): m for m in held}
    cur.execute("create temp table _skips (like ops.skips including defaults) on commit drop")
    columns = "plan_date, customer_id, phase, step, reason, channel, variant, message_key"
    with cur.copy(f"copy _skips ({columns}) from stdin") as copy:
        for c, reason in skips:
            m = would.get((c.customer_id, c.phase.name, c.step.number))
            if reason == CONTROL_GROUP and m is not None:
                message = (m.channel, m.variant, c.message_key)
            else:
                message = (None, None, None)
            copy.write_row(
                (plan_date, c.customer_id, c.phase.name, c.step.number, reason, *message)
            )
    cur.execute(
        f"insert into ops.skips ({columns}) select {columns} from _skips on conflict do nothing"
    )
    return cur.rowcount


def volume_override(conn: psycopg.Connection, plan_date: date) -> str | None:
    """The reason recorded by `lifecycle volume allow` for this date, if any."""
    row = conn.execute(
        "select reason from ops.volume_overrides where plan_date = %s", (plan_date,)
    ).fetchone()
    return row[0] if row else None


def allow_volume(url: str, plan_date: date, reason: str) -> None:
    """Record that ``plan_date`` may exceed the volume guard (an intended big send)."""
    with psycopg.connect(url) as conn:
        conn.execute(
            "insert into ops.volume_overrides (plan_date, reason) values (%s, %s) "
            "on conflict (plan_date) do update set reason = excluded.reason, created_at = now()",
            (plan_date, reason),
        )


def plan_day(
    url: str,
    rules: Rules,
    plan_date: date,
    settings: Settings | None = None,
    *,
    allow_volume: bool = False,
) -> PlanReport:
    """Plan ``plan_date``: write its outbox and skip rows (idempotent). Returns the counts.

    Raises VolumeGuardTripped (after recording the would-be messages as skips, and writing no
    message) when the day's volume exceeds the policy's volume guard, unless ``allow_volume``
    or an override recorded for the date (``lifecycle volume allow``) says it is intended.
    """
    settings = settings or get_settings()
    with psycopg.connect(url) as conn:
        # Planning a date is serialised: two planners of one day would race on arbitration.
        conn.execute("select pg_advisory_xact_lock(727002, %s)", (plan_date.toordinal(),))
        # A guard that tripped before is decided again now (the data or the override changed).
        conn.execute(
            "delete from ops.skips where plan_date = %s and reason = %s", (plan_date, VOLUME_GUARD)
        )
        plan = compute_plan(conn, rules, plan_date, settings)
        report = plan.report()
        tripped = plan.volume.tripped and not (allow_volume or volume_override(conn, plan_date))
        with conn.cursor() as cur:
            if tripped:
                # nothing goes out: the control customers' would-haves are not exposures
                # either, both arms are held by the guard
                would = plan.messages + plan.held
                held = [(m.candidate, VOLUME_GUARD) for m in would]
                others = [(c, r) for c, r in plan.skips if r != CONTROL_GROUP]
                report.inserted_skips = _write_skips(cur, plan_date, others + held)
                report.skipped[VOLUME_GUARD] += len(held)
                report.skipped[CONTROL_GROUP] -= len(plan.held)
                report.skipped = +report.skipped  # drop reasons left at 0
                report.planned.clear()
                report.variants.clear()
                report.control.clear()
            else:
                rows = [message_row(m, plan_date, rules, settings) for m in plan.messages]
                report.inserted_messages = _write_messages(cur, rows)
                report.inserted_skips = _write_skips(cur, plan_date, plan.skips, plan.held)
        if tripped:
            conn.commit()
            raise VolumeGuardTripped(plan_date, plan.volume)
    return report
