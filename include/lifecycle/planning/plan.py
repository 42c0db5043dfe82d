"""What planning decides, before anything is written: candidates, messages, skips, the report.

Also the skip reasons and the message key: a deterministic hash of (customer, phase, step,
membership cycle), unique in the outbox, so a step can never be planned twice.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from lifecycle.contacts import CHANNEL_KIND, normalize
from lifecycle.rules.compiled import CompiledPhase, CompiledStep


class PlanningError(RuntimeError):
    pass


PHASES_IN_ORDER = ("activation", "stimulation", "cross_sell", "retention", "return")

# Skip reasons (docs/operations.md, "Skip reasons").
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
SHARED_CONTACT = "shared_contact"
VOLUME_GUARD = "volume_guard"
DEAD_CONTACT = "dead_contact"
CALL_CAPACITY = "call_capacity"
CALL_ATTEMPTS = "call_attempts"
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
    DEAD_CONTACT,
    TOO_LONG,
    RENDER_FAILED,
    LOWER_PRIORITY,
    SHARED_CONTACT,
    CALL_CAPACITY,
    CALL_ATTEMPTS,
    VOLUME_GUARD,
)
# ops.outbox.last_error of a call whose outcome was "no answer": the step may be called again
# on a later day of its window (policy.calls.max_attempts)
CALL_NO_ANSWER = "call_no_answer"
# ops.suppressions.reason -> skip reason
SUPPRESSION_SKIPS = {
    "opted_out": OPTED_OUT,
    "hard_bounce": HARD_BOUNCE,
    "spam_complaint": SPAM_COMPLAINT,
    "manual": SUPPRESSED,
    DEAD_CONTACT: DEAD_CONTACT,  # ops.dead_contacts (lifecycle.contacts)
}
LIVE_STATUSES = ("planned", "claimed", "sent", "unknown")
# the facts key of a keep-alive candidate's cycle: its period of policy.keep_alive.every_days
KEEP_ALIVE_CYCLE = "keep_alive_cycle"


def holds_key(status: str, handed_at: object) -> bool:
    """Whether an outbox row keeps its step from ever being planned again: while it is live,
    and for good once it may have reached the provider (handed over, whatever its status now;
    an 'unknown' row reconciliation expired included). As the outbox's unique key index."""
    return status in LIVE_STATUSES or handed_at is not None


def contact_key(channel: str, address: str | None) -> tuple[str, str]:
    """(kind, address) as one person's inbox: emails compared without case or spaces,
    phone numbers by their digits (and a leading +); an SMS and a call reach the same phone."""
    kind = CHANNEL_KIND[channel]
    return kind, normalize(kind, address or "")


def address_of(channel: str, facts: dict[str, Any]) -> str | None:
    """The customer's address a channel uses: the phone for SMS and calls, else the email."""
    return facts.get("email" if channel == "email" else "phone")


def expected_value(c: Candidate) -> float:
    """What a call to the candidate is worth, to order a club's call candidates: the member's
    lifetime revenue (customer_facts) times the step's offer margin."""
    revenue = float(c.facts.get("lifetime_revenue") or 0)
    return revenue * c.step.offer.margin


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
        if KEEP_ALIVE_CYCLE in self.facts:  # one keep-alive per customer and period
            return self.facts[KEEP_ALIVE_CYCLE]
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
    offer_code: str | None = None
    # next_best | fallback for an offer chosen per member (next_best_offer), None for a fixed one
    offer_source: str | None = None
    # policy.send_time habit: local minute of the day the member usually visits (None: the
    # window's start)
    usual_minute: int | None = None

    @property
    def customer_id(self) -> str:
        return self.candidate.customer_id


@dataclass
class History:
    """What earlier days hold for the candidates: ops.outbox, and the control group's
    would-have-been messages (ops.skips control_group rows with a channel), which count as sent
    for the keys, the caps and the day's addresses, so both arms are decided alike."""

    # message keys other days' rows hold (``holds_key``: the outbox's unique key, all days)
    keys: set[str] = field(default_factory=set)
    # customer -> [(plan_date, channel, phase)] of those rows before D in the lookback
    sent: dict[str, list[tuple[date, str, str]]] = field(default_factory=dict)
    today: dict[str, str] = field(default_factory=dict)  # customer -> D's message key
    # contact_key of every message already in D's outbox (any customer): taken for the day
    addresses: set[tuple[str, str]] = field(default_factory=set)
    # customer -> channel of D's control-group would-have recorded by an earlier run of the day
    # (its address is taken for the day as a message's is; the skip row holds no address)
    held_today: dict[str, str] = field(default_factory=dict)
    # message key -> calls of the step that were not answered (ops.outbox rows failed with
    # call_no_answer): its attempts so far, against policy.calls.max_attempts
    call_attempts: dict[str, int] = field(default_factory=dict)
    # club -> calls D's outbox and control would-haves already hold (an earlier run of the day)
    calls_today: dict[str, int] = field(default_factory=dict)


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
    # (phase, channel) -> control-group customers held back where this message would have been
    # written (also counted in skipped as control_group)
    control: Counter = field(default_factory=Counter)
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
            "control": {f"{p}:{c}": n for (p, c), n in sorted(self.control.items())},
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
    # Candidates whose message for D is in the outbox already, or held back as control
    # (D planned before): neither a new message nor a skip.
    already_planned: list[Candidate] = field(default_factory=list)
    # The control group's would-have-been messages: what each control customer would have
    # received after every rule (each is in ``skips`` too, with reason control_group).
    held: list[Message] = field(default_factory=list)

    def report(self) -> PlanReport:
        report = PlanReport(self.plan_date, volume=self.volume)
        for c in self.candidates:
            report.eligible[(c.phase.name, c.step.number)] += 1
        for m in self.messages:
            report.planned[(m.candidate.phase.name, m.channel)] += 1
            report.variants[(m.candidate.phase.name, m.candidate.step.number, m.variant)] += 1
        for _, reason in self.skips:
            report.skipped[reason] += 1
        for m in self.held:
            report.control[(m.candidate.phase.name, m.channel)] += 1
        return report
