"""Plan one logical date: phase audiences -> arbitration -> outbox rows and skip rows.

Planning for date D reads ``customer_facts`` built as of D, the outbox of earlier days and the
suppression list, and writes only D's rows, in one transaction. Inserts ignore conflicts, so
planning D twice changes nothing (DESIGN.md #3, #4). ``compute_plan`` only reads: the preview
runs it in a read-only transaction; ``plan_day`` runs it and writes the result.
"""

from __future__ import annotations

import hashlib
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from lifecycle import sms
from lifecycle.facts import FACTS_RELATION
from lifecycle.rules import (
    RENDER_ERRORS,
    CompiledPhase,
    CompiledStep,
    CompiledVariant,
    Rules,
    VolumeGuard,
    assign_variant,
    in_control_group,
    render,
    template_context,
)
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
OPTED_OUT = "opted_out"
HARD_BOUNCE = "hard_bounce"
SPAM_COMPLAINT = "spam_complaint"
SUPPRESSED = "suppressed"
CAPPED = "capped"
TOO_LONG = "too_long"
RENDER_FAILED = "render_failed"
LOWER_PRIORITY = "lower_priority"
VOLUME_GUARD = "volume_guard"
SKIP_REASONS = (
    CONTROL_GROUP,
    ALREADY_SENT,
    ALREADY_PLANNED_TODAY,
    CAPPED,
    NO_CONTACT,
    NO_CONSENT,
    OPTED_OUT,
    HARD_BOUNCE,
    SPAM_COMPLAINT,
    SUPPRESSED,
    TOO_LONG,
    RENDER_FAILED,
    LOWER_PRIORITY,
    VOLUME_GUARD,
)
# ops.suppressions.reason -> skip reason
SUPPRESSION_SKIPS = {
    "opted_out": OPTED_OUT,
    "hard_bounce": HARD_BOUNCE,
    "spam_complaint": SPAM_COMPLAINT,
    "manual": SUPPRESSED,
}
LIVE_STATUSES = ("planned", "claimed", "sent", "unknown")


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
        if self.phase.phase.repeat == "once_per_customer":
            return "customer"
        return self.facts.get("membership_id") or "none"

    @property
    def message_key(self) -> str:
        return message_key(self.customer_id, self.phase.name, self.step.number, self.cycle_key)


def message_key(customer_id: str, phase: str, step: int, cycle_key: str) -> str:
    """Deterministic key of a phase step for one membership cycle of one customer."""
    raw = f"{customer_id}|{phase}|{step}|{cycle_key}"
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Message:
    """A decided message: who, which step, channel and variant, and the rendered text."""

    candidate: Candidate
    channel: str
    variant: str
    to_address: str
    subject: str | None
    body: str
    sms_segments: int | None = None

    @property
    def customer_id(self) -> str:
        return self.candidate.customer_id


@dataclass
class History:
    """What earlier days hold for the candidates (from ops.outbox)."""

    # live message keys of any other day (the outbox's unique key holds across all days)
    keys: set[str] = field(default_factory=set)
    # customer -> [(plan_date, channel, phase)] of live messages before D in the lookback
    sent: dict[str, list[tuple[date, str, str]]] = field(default_factory=dict)
    today: dict[str, str] = field(default_factory=dict)  # customer -> D's message key


@dataclass
class VolumeCheck:
    planned: int
    max_messages: int | None
    median: float | None
    history_days: int
    ratio_limit: float | None  # planned may not exceed this (None: ratio check not applied)
    tripped: bool
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "planned": self.planned,
            "max_messages": self.max_messages,
            "median": self.median,
            "history_days": self.history_days,
            "ratio_limit": self.ratio_limit,
            "tripped": self.tripped,
            "reason": self.reason,
        }


class VolumeGuardTripped(PlanningError):
    """The day's planned volume exceeds the volume guard: nothing was written to the outbox."""

    def __init__(self, plan_date: date, check: VolumeCheck):
        self.plan_date = plan_date
        self.check = check
        super().__init__(
            f"volume guard tripped for {plan_date}: {check.reason}. Nothing was put in the "
            f"outbox; the {check.planned} chosen messages are recorded as skips "
            f"'{VOLUME_GUARD}'. Check the day's data (a bad load?). If this volume is intended, "
            f"allow it: `lifecycle volume allow --date {plan_date} --reason '...'` and run the "
            f"plan again (or `lifecycle run --date {plan_date} --allow-volume`)"
        )


@dataclass
class PlanReport:
    plan_date: date
    eligible: Counter = field(default_factory=Counter)  # (phase, step) -> customers
    planned: Counter = field(default_factory=Counter)  # (phase, channel) -> messages
    skipped: Counter = field(default_factory=Counter)  # reason -> rows
    variants: Counter = field(default_factory=Counter)  # (phase, step, variant) -> messages
    volume: VolumeCheck | None = None
    inserted_messages: int = 0
    inserted_skips: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "plan_date": self.plan_date.isoformat(),
            "eligible": {f"{p}:{s}": n for (p, s), n in sorted(self.eligible.items())},
            "planned": {f"{p}:{c}": n for (p, c), n in sorted(self.planned.items())},
            "skipped": dict(sorted(self.skipped.items())),
            "variants": {f"{p}:{s}:{v}": n for (p, s, v), n in sorted(self.variants.items())},
            "volume": self.volume.as_dict() if self.volume else None,
            "inserted_messages": self.inserted_messages,
            "inserted_skips": self.inserted_skips,
        }


@dataclass
class Plan:
    """Everything planning decided for a day, before anything is written."""

    plan_date: date
    facts_as_of: date | None
    candidates: list[Candidate]
    messages: list[Message]
    skips: list[tuple[Candidate, str]]
    volume: VolumeCheck
    # Candidates whose message for D is in the outbox already (D planned before): neither a
    # new message nor a skip.
    already_planned: list[Candidate] = field(default_factory=list)

    def report(self) -> PlanReport:
        report = PlanReport(self.plan_date, volume=self.volume)
        for c in self.candidates:
            report.eligible[(c.phase.name, c.step.number)] += 1
        for m in self.messages:
            report.planned[(m.candidate.phase.name, m.channel)] += 1
            report.variants[(m.candidate.phase.name, m.candidate.step.number, m.variant)] += 1
        for _, reason in self.skips:
            report.skipped[reason] += 1
        return report


# --------------------------------------------------------------------------- reading


def facts_table(settings: Settings) -> sql.Composable:
    return sql.Identifier(settings.dbt_schema, FACTS_RELATION)


def facts_built_for(conn: psycopg.Connection, settings: Settings) -> tuple[date | None, int]:
    """(as_of_date customer_facts is built for, rows); raise PlanningError if it is not built."""
    exists = conn.execute(
        "select to_regclass(%s)", (f'"{settings.dbt_schema}"."{FACTS_RELATION}"',)
    ).fetchone()[0]
    if exists is None:
        raise PlanningError(
            f"{settings.dbt_schema}.{FACTS_RELATION} does not exist: build dbt first "
            "(`lifecycle run --date D` does it)"
        )
    low, high, rows = conn.execute(
        sql.SQL("select min(as_of_date), max(as_of_date), count(*) from {}").format(
            facts_table(settings)
        )
    ).fetchone()
    if rows and low != high:
        raise PlanningError(
            f"{settings.dbt_schema}.{FACTS_RELATION} mixes as_of dates {low}..{high}: rebuild it"
        )
    return low, rows


def check_facts_date(conn: psycopg.Connection, plan_date: date, settings: Settings) -> date | None:
    """Refuse facts built for another day; return the day they are built for (None: empty)."""
    as_of, rows = facts_built_for(conn, settings)
    if rows and as_of != plan_date:
        raise PlanningError(
            f"{settings.dbt_schema}.{FACTS_RELATION} is built as of {as_of}, not {plan_date}: "
            f"build dbt for {plan_date} first (`lifecycle run --date {plan_date}` does both)"
        )
    return as_of


def select_candidates(
    conn: psycopg.Connection, rules: Rules, plan_date: date, settings: Settings
) -> list[Candidate]:
    """Every (customer, phase, step) the rules select from customer_facts as of ``plan_date``."""
    as_of = check_facts_date(conn, plan_date, settings)
    if as_of is None:
        return []
    table = facts_table(settings)
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


def lookback_days(rules: Rules) -> int:
    """The longest rolling cap of the rules, in days."""
    policy = rules.policy
    caps = list(policy.frequency_caps) + policy.channel_caps.sms + policy.channel_caps.email
    for p in rules.phases:
        caps += p.phase.frequency_caps
    return max((cap.days for cap in caps), default=1)


def load_history(
    conn: psycopg.Connection, customer_ids: list[str], plan_date: date, days: int
) -> History:
    """Live message keys of these customers, their messages in the lookback, and D's rows."""
    history = History()
    rows = conn.execute(
        """
        select customer_id, message_key, plan_date, status, channel, phase
        from ops.outbox
        where customer_id = any(%s)
        """,
        (customer_ids,),
    )
    since = plan_date - timedelta(days=days)
    for customer_id, key, day, status, channel, phase in rows:
        if day == plan_date:
            history.today[customer_id] = key
            continue
        if status in LIVE_STATUSES:
            history.keys.add(key)
            if since <= day < plan_date:
                history.sent.setdefault(customer_id, []).append((day, channel, phase))
    return history


def load_suppressions(conn: psycopg.Connection, customer_ids: list[str]) -> dict[tuple, str]:
    """(customer_id, channel) -> suppression reason, for these customers.

    Every suppression applies, whatever day is planned: an opt-out received today must stop a
    replayed past day too (sending to someone who opted out is the one thing never allowed).
    """
    rows = conn.execute(
        "select customer_id, channel, reason from ops.suppressions where customer_id = any(%s)",
        (customer_ids,),
    )
    return {(c, ch): reason for c, ch, reason in rows}


# --------------------------------------------------------------------------- deciding


def _count_within(entries: list[tuple[date, str, str]], plan_date: date, days: int, pred) -> int:
    # A cap of N per `days` days counts the days before D inside the window; D's message is the
    # one being decided.
    start = plan_date - timedelta(days=days)
    return sum(1 for d, ch, ph in entries if d > start and pred(ch, ph))


def _capped(caps, entries, plan_date, pred) -> bool:
    return any(_count_within(entries, plan_date, cap.days, pred) >= cap.max for cap in caps)


def _render_for(
    c: Candidate, variant: CompiledVariant, channel: str
) -> tuple[str | None, str, int | None]:
    """(subject, body, sms segments) of the candidate's message on a channel (may raise)."""
    ctx = template_context(c.facts, variant.offer.model_dump(), variant.name)
    if channel == "sms":
        assert variant.templates.sms is not None  # rules validation requires it
        body = render(variant.templates.sms, ctx)
        return None, body, sms.segments(body)
    email = variant.templates.email
    assert email is not None
    return render(email.subject, ctx), render(email.body, ctx), None


def _decide_channel(
    c: Candidate,
    variant: CompiledVariant,
    rules: Rules,
    plan_date: date,
    entries: list[tuple[date, str, str]],
    suppressions: dict[tuple, str],
) -> Message | str:
    """The first usable channel in the phase's preference as a Message, else a skip reason.

    The reason is the one of the first channel with a valid contact (what stopped the channel
    the customer could have been reached on), or no_contact when there is none.
    """
    facts = c.facts
    first_reason: str | None = None
    channel_caps = rules.policy.channel_caps
    for ch in c.phase.phase.channels:
        valid = bool(facts.get("phone_valid" if ch == "sms" else "email_valid"))
        reason: str
        if not facts.get(f"{ch}_contactable"):
            reason = NO_CONSENT if valid else NO_CONTACT
        elif (c.customer_id, ch) in suppressions:
            reason = SUPPRESSION_SKIPS.get(suppressions[(c.customer_id, ch)], SUPPRESSED)
        elif _capped(
            getattr(channel_caps, ch), entries, plan_date, lambda sent_ch, _, ch=ch: sent_ch == ch
        ):
            reason = CAPPED
        else:
            try:
                subject, body, segments = _render_for(c, variant, ch)
            except RENDER_ERRORS:
                reason = RENDER_FAILED
            else:
                if segments is not None and segments > c.phase.phase.max_sms_segments:
                    reason = TOO_LONG
                else:
                    to = facts["phone"] if ch == "sms" else facts["email"]
                    return Message(c, ch, variant.name, to, subject, body, segments)
        if valid and first_reason is None:
            first_reason = reason
    return first_reason or NO_CONTACT


def arbitrate(
    candidates: list[Candidate],
    rules: Rules,
    plan_date: date,
    history: History,
    suppressions: dict[tuple, str] | None = None,
) -> tuple[list[Message], list[tuple[Candidate, str]]]:
    """Decide per customer: ([messages to send], [(candidate, skip reason)])."""
    suppressions = suppressions or {}
    policy = rules.policy
    cg = policy.control_group
    by_customer: dict[str, list[Candidate]] = defaultdict(list)
    for c in candidates:
        by_customer[c.customer_id].append(c)
    chosen: list[Message] = []
    skips: list[tuple[Candidate, str]] = []
    for customer_id, cands in by_customer.items():
        cands.sort(key=lambda c: (c.phase.phase.priority, c.step.number))
        if in_control_group(customer_id, cg.percent, cg.salt):
            skips.extend((c, CONTROL_GROUP) for c in cands)
            continue
        if customer_id in history.today:
            today = history.today[customer_id]
            skips.extend((c, ALREADY_PLANNED_TODAY) for c in cands if c.message_key != today)
            continue
        entries = history.sent.get(customer_id, [])
        capped = _capped(policy.frequency_caps, entries, plan_date, lambda ch, ph: True)
        decided = False
        for c in cands:
            if decided:
                skips.append((c, LOWER_PRIORITY))
            elif c.message_key in history.keys:
                skips.append((c, ALREADY_SENT))
            elif capped or _capped(
                c.phase.phase.frequency_caps,
                entries,
                plan_date,
                lambda ch, ph, name=c.phase.name: ph == name,
            ):
                skips.append((c, CAPPED))
            else:
                variant = assign_variant(
                    customer_id, c.phase.name, c.step.number, c.step.variants, policy.variant_salt
                )
                outcome = _decide_channel(c, variant, rules, plan_date, entries, suppressions)
                if isinstance(outcome, Message):
                    chosen.append(outcome)
                    decided = True
                else:
                    skips.append((c, outcome))
    return chosen, skips


def check_volume(
    conn: psycopg.Connection, guard: VolumeGuard, plan_date: date, planned: int
) -> VolumeCheck:
    """Compare the day's planned volume with the absolute cap and the trailing median."""
    since = plan_date - timedelta(days=guard.median_days)
    rows = conn.execute(
        """
        select d, coalesce(o.n, 0) from (
            select plan_date as d from ops.outbox where plan_date >= %(since)s and plan_date < %(d)s
            union
            select plan_date from ops.skips where plan_date >= %(since)s and plan_date < %(d)s
        ) days
        left join (
            select plan_date, count(*) as n from ops.outbox
            where plan_date >= %(since)s and plan_date < %(d)s group by plan_date
        ) o on o.plan_date = days.d
        """,
        {"since": since, "d": plan_date},
    ).fetchall()
    volumes = [n for _, n in rows]
    median = float(statistics.median(volumes)) if volumes else None
    ratio_limit = None
    if (
        guard.max_ratio_to_median is not None
        and median is not None
        and len(volumes) >= guard.min_history_days
    ):
        ratio_limit = guard.max_ratio_to_median * median
    reason = "within limits"
    tripped = False
    if guard.max_messages is not None and planned > guard.max_messages:
        tripped = True
        reason = (
            f"{planned} messages planned, more than policy.volume_guard.max_messages "
            f"({guard.max_messages})"
        )
    elif ratio_limit is not None and planned > guard.ratio_floor and planned > ratio_limit:
        tripped = True
        reason = (
            f"{planned} messages planned, more than {guard.max_ratio_to_median:g} x the median "
            f"of the previous {guard.median_days} days ({median:g} a day, {len(volumes)} days "
            "planned)"
        )
    return VolumeCheck(
        planned, guard.max_messages, median, len(volumes), ratio_limit, tripped, reason
    )


def compute_plan(
    conn: psycopg.Connection, rules: Rules, plan_date: date, settings: Settings
) -> Plan:
    """Decide the day without writing anything (the preview runs this read-only)."""
    as_of = check_facts_date(conn, plan_date, settings)
    candidates = select_candidates(conn, rules, plan_date, settings)
    ids = sorted({c.customer_id for c in candidates})
    history = load_history(conn, ids, plan_date, lookback_days(rules))
    suppressions = load_suppressions(conn, ids)
    messages, skips = arbitrate(candidates, rules, plan_date, history, suppressions)
    volume = check_volume(conn, rules.policy.volume_guard, plan_date, len(messages))
    already = [c for c in candidates if history.today.get(c.customer_id) == c.message_key]
    return Plan(plan_date, as_of, candidates, messages, skips, volume, already)


# --------------------------------------------------------------------------- writing


def customer_zone(name: str | None, default: str) -> ZoneInfo:
    """The customer's time zone, the club's when it is empty or unknown."""
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


def message_row(m: Message, plan_date: date, rules: Rules, settings: Settings) -> dict:
    c = m.candidate
    tz = customer_zone(c.facts.get("timezone"), settings.club_timezone)
    send_at, window_end, deadline = send_times(plan_date, tz, rules, settings.send_deadline_hours)
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


def _write_skips(cur: psycopg.Cursor, plan_date: date, skips: list[tuple[Candidate, str]]) -> int:
    if not skips:
        return 0
    cur.execute("create temp table _skips (like ops.skips including defaults) on commit drop")
    with cur.copy("copy _skips (plan_date, customer_id, phase, step, reason) from stdin") as copy:
        for c, reason in skips:
            copy.write_row((plan_date, c.customer_id, c.phase.name, c.step.number, reason))
    cur.execute(
        "insert into ops.skips (plan_date, customer_id, phase, step, reason) "
        "select plan_date, customer_id, phase, step, reason from _skips "
        "on conflict do nothing"
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
                held = [(m.candidate, VOLUME_GUARD) for m in plan.messages]
                report.inserted_skips = _write_skips(cur, plan_date, plan.skips + held)
                report.skipped[VOLUME_GUARD] += len(held)
                report.planned.clear()
                report.variants.clear()
            else:
                rows = [message_row(m, plan_date, rules, settings) for m in plan.messages]
                report.inserted_messages = _write_messages(cur, rows)
                report.inserted_skips = _write_skips(cur, plan_date, plan.skips)
        if tripped:
            conn.commit()
            raise VolumeGuardTripped(plan_date, plan.volume)
    return report
