"""What a rules file would do on a day, without sending or writing anything.

``preview`` runs the planner's own decision code (``planning.compute_plan``) in a read-only
transaction that is rolled back, so its counts are what planning would write. ``diff`` compares
the audiences of two rules files on the same customer_facts. Both return data; the CLI formats.
Contact data is masked in everything returned here.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, date
from typing import Any

import psycopg
from psycopg import sql

from lifecycle.logs import mask_contact
from lifecycle.planning.arbitration import compute_plan
from lifecycle.planning.audience import facts_table
from lifecycle.planning.outbox import customer_zone, send_times, volume_override
from lifecycle.planning.plan import Message, Plan
from lifecycle.rules import sms
from lifecycle.rules.compiled import Rules
from lifecycle.settings import Settings, get_settings


@contextmanager
def read_only(url: str) -> Iterator[psycopg.Connection]:
    """A connection whose transaction is read-only and always rolled back."""
    with psycopg.connect(url) as conn:
        conn.read_only = True
        try:
            yield conn
        finally:
            conn.rollback()


# --------------------------------------------------------------------------- preview


@dataclass
class Sample:
    customer_id: str
    phase: str
    step: int
    channel: str
    variant: str
    to: str | None  # masked
    subject: str | None
    body: str
    sms: dict[str, Any] | None  # encoding, length, segments
    offer_code: str | None = None
    offer_source: str | None = None  # next_best | fallback (from: next_best_offer), else None
    send_at_local: str | None = None  # HH:MM in the customer's zone, when it is due


@dataclass
class PhasePreview:
    name: str
    priority: int
    eligible: int  # distinct customers in the audience of any step
    eligible_by_step: dict[int, int]
    planned: int  # messages after arbitration
    by_channel: dict[str, int]
    by_variant: dict[str, int]  # "step:variant" -> messages
    skipped: dict[str, int]  # reason -> customers
    already_planned: int  # in D's outbox already (D was planned before)
    samples: list[Sample] = field(default_factory=list)
    # step -> "step 4 (step 3 again: days_since_end 120-149)": the repetitions of a step
    repetitions: dict[int, str] = field(default_factory=dict)
    # control-group customers held back where a message would have been written, by the
    # channel it would have gone on (also in skipped as control_group)
    control: dict[str, int] = field(default_factory=dict)
    # "code" or "code (next_best|fallback)" -> messages: which offer each member got and why
    by_offer: dict[str, int] = field(default_factory=dict)


@dataclass
class Preview:
    plan_date: date
    facts_as_of: date | None
    facts_rows: int
    rules_file: str
    rules_fingerprint: str
    phases: list[PhasePreview]
    planned: int
    skipped: dict[str, int]
    volume: dict[str, Any]
    volume_override: str | None
    send_window: str
    notes: list[str]

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["plan_date"] = self.plan_date.isoformat()
        out["facts_as_of"] = self.facts_as_of.isoformat() if self.facts_as_of else None
        return out


def offer_label(m: Message) -> str:
    """The offer of a message as the preview counts it: its code, and why when chosen per member."""
    return f"{m.offer_code} ({m.offer_source})" if m.offer_source else str(m.offer_code)


def _sample(m: Message, plan_date: date, rules: Rules, settings: Settings) -> Sample:
    c = m.candidate
    send_at, _, _ = send_times(
        plan_date,
        customer_zone(c.facts.get("timezone"), settings.club_timezone),
        rules,
        settings.send_deadline_hours,
        m.usual_minute,
    )
    info = None
    if m.channel == "sms":
        a = sms.analyze(m.body)
        info = {"encoding": a.encoding, "length": a.length, "segments": a.segments}
    return Sample(
        c.customer_id,
        c.phase.name,
        c.step.number,
        m.channel,
        m.variant,
        mask_contact(m.channel, m.to_address),
        m.subject,
        m.body,
        info,
        m.offer_code,
        m.offer_source,
        f"{send_at:%H:%M}",
    )


def _send_window_note(plan: Plan, rules: Rules, settings: Settings) -> str:
    w = rules.policy.send_window
    by_zone: Counter = Counter()
    for m in plan.messages:
        by_zone[m.candidate.facts.get("timezone") or settings.club_timezone] += 1
    head = (
        f"messages wait for the send window {w.start:%H:%M}-{w.end:%H:%M} in each customer's "
        f"local time and are never sent outside it"
    )
    if not by_zone:
        return head
    parts = []
    for zone, n in by_zone.most_common(4):
        start, _, _ = send_times(
            plan.plan_date,
            customer_zone(zone, settings.club_timezone),
            rules,
            settings.send_deadline_hours,
        )
        parts.append(f"{zone} {n} from {start.astimezone(UTC):%H:%M} UTC")
    more = len(by_zone) - 4
    return head + "; " + ", ".join(parts) + (f", and {more} more zone(s)" if more > 0 else "")


def preview(
    url: str,
    rules: Rules,
    plan_date: date,
    settings: Settings | None = None,
    *,
    samples: int = 3,
) -> Preview:
    """Per phase: eligible, planned after arbitration, skip reasons, rendered samples (masked)."""
    settings = settings or get_settings()
    with read_only(url) as conn:
        plan = compute_plan(conn, rules, plan_date, settings)
        rows = conn.execute(
            sql.SQL("select count(*) from {}").format(facts_table(settings))
        ).fetchone()[0]
        override = volume_override(conn, plan_date)

    eligible: dict[str, set[str]] = defaultdict(set)
    by_step: dict[str, Counter] = defaultdict(Counter)
    for c in plan.candidates:
        eligible[c.phase.name].add(c.customer_id)
        by_step[c.phase.name][c.step.number] += 1
    skipped: dict[str, Counter] = defaultdict(Counter)
    for c, reason in plan.skips:
        skipped[c.phase.name][reason] += 1
    already: Counter = Counter(c.phase.name for c in plan.already_planned)
    messages: dict[str, list[Message]] = defaultdict(list)
    for m in plan.messages:
        messages[m.candidate.phase.name].append(m)
    control: dict[str, Counter] = defaultdict(Counter)
    for m in plan.held:
        control[m.candidate.phase.name][m.channel] += 1

    phases: list[PhasePreview] = []
    for phase in rules.phases:
        ms = messages[phase.name]
        shown: list[Sample] = []
        per_group: Counter = Counter()
        for m in ms:  # candidates come ordered by customer id: samples are stable
            group = (m.candidate.step.number, m.channel, m.variant)
            if per_group[group] < samples:
                per_group[group] += 1
                shown.append(_sample(m, plan_date, rules, settings))
        phases.append(
            PhasePreview(
                phase.name,
                phase.phase.priority,
                len(eligible[phase.name]),
                {s.number: by_step[phase.name][s.number] for s in phase.steps},
                len(ms),
                dict(sorted(Counter(m.channel for m in ms).items())),
                dict(sorted(Counter(f"{m.candidate.step.number}:{m.variant}" for m in ms).items())),
                dict(sorted(skipped[phase.name].items())),
                already[phase.name],
                shown,
                {s.number: s.label() for s in phase.steps if s.repeats is not None},
                dict(sorted(control[phase.name].items())),
                dict(sorted(Counter(offer_label(m) for m in ms).items())),
            )
        )
    notes: list[str] = []
    if plan.already_planned:
        notes.append(
            f"{plan_date} was planned before: {len(plan.already_planned)} of its messages are in "
            "the outbox already, or held back as control (counted apart, not as planned)"
        )
    if plan.facts_as_of is None:
        notes.append("customer_facts is empty: nobody to plan for")
    volume = plan.volume
    if volume.tripped:
        notes.append(
            f"the volume guard would trip ({volume.reason}): planning would write no message"
            + (f", but an override is recorded for the date ({override!r})" if override else "")
        )
    total_skips: Counter = Counter()
    for counts in skipped.values():
        total_skips.update(counts)
    return Preview(
        plan_date,
        plan.facts_as_of,
        rows,
        rules.file,
        rules.fingerprint(),
        phases,
        len(plan.messages),
        dict(sorted(total_skips.items())),
        volume.as_dict(),
        override,
        _send_window_note(plan, rules, settings),
        notes,
    )


# --------------------------------------------------------------------------- diff


@dataclass
class StepDiff:
    phase: str
    step: int
    old: int | None  # audience under OLD (None: no such enabled step)
    new: int | None
    added: int
    removed: int
    added_sample: list[str]
    removed_sample: list[str]


@dataclass
class RulesDiff:
    plan_date: date
    facts_as_of: date | None
    old_file: str
    new_file: str
    steps: list[StepDiff]
    planned_old: dict[str, int]  # phase -> messages after arbitration
    planned_new: dict[str, int]

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["plan_date"] = self.plan_date.isoformat()
        out["facts_as_of"] = self.facts_as_of.isoformat() if self.facts_as_of else None
        return out

    @property
    def changed(self) -> list[StepDiff]:
        return [s for s in self.steps if s.added or s.removed or s.old != s.new]


def _audiences(
    conn: psycopg.Connection, rules: Rules, settings: Settings
) -> dict[tuple[str, int], set[str]]:
    out = {}
    table = facts_table(settings)
    for phase in rules.phases:
        for step in phase.steps:
            q = sql.SQL("select customer_id from {} where {}").format(table, step.condition.sql)
            out[(phase.name, step.number)] = {r[0] for r in conn.execute(q, step.condition.params)}
    return out


def diff(
    url: str,
    old: Rules,
    new: Rules,
    plan_date: date,
    settings: Settings | None = None,
    *,
    samples: int = 5,
) -> RulesDiff:
    """Per phase step: the audience under OLD and NEW, who is added and who removed."""
    settings = settings or get_settings()
    with read_only(url) as conn:
        old_plan = compute_plan(conn, old, plan_date, settings)  # also refuses a date mismatch
        new_plan = compute_plan(conn, new, plan_date, settings)
        a_old = _audiences(conn, old, settings)
        a_new = _audiences(conn, new, settings)
    order = {name: i for i, name in enumerate(p.name for p in new.phases + old.phases)}
    keys = sorted(set(a_old) | set(a_new), key=lambda k: (order.get(k[0], 99), k[1]))
    steps = []
    for key in keys:
        before, after = a_old.get(key), a_new.get(key)
        added = sorted((after or set()) - (before or set()))
        removed = sorted((before or set()) - (after or set()))
        steps.append(
            StepDiff(
                key[0],
                key[1],
                None if before is None else len(before),
                None if after is None else len(after),
                len(added),
                len(removed),
                added[:samples],
                removed[:samples],
            )
        )

    def planned(plan: Plan) -> dict[str, int]:
        return dict(sorted(Counter(m.candidate.phase.name for m in plan.messages).items()))

    return RulesDiff(
        plan_date,
        new_plan.facts_as_of,
        old.file,
        new.file,
        steps,
        planned(old_plan),
        planned(new_plan),
    )
