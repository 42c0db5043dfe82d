"""Deciding: one message per customer per day, by phase priority, within caps and consents,
and one message per contact address per day (customer records may share a phone or an email).

The control group is held back here, after every other rule: a control customer is decided as
any other and held back only where its message would have been written, so the control arm is
the customers who would have been messaged. The volume guard compares the day's plan with
recent days.
``compute_plan`` only reads, so the preview can run it in a read-only transaction.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import replace
from datetime import date, timedelta

import psycopg

from lifecycle.planning.audience import (
    check_facts_date,
    load_calls_today,
    load_history,
    load_next_best_offers,
    load_send_minutes,
    load_suppressions,
    lookback_days,
    select_candidates,
    select_keep_alive,
)
from lifecycle.planning.plan import (
    ALREADY_PLANNED_TODAY,
    ALREADY_SENT,
    CALL_ATTEMPTS,
    CALL_CAPACITY,
    CAPPED,
    CONTROL_GROUP,
    LOWER_PRIORITY,
    NO_CONSENT,
    NO_CONTACT,
    RENDER_FAILED,
    SHARED_CONTACT,
    SUPPRESSED,
    SUPPRESSION_SKIPS,
    TOO_LONG,
    Candidate,
    History,
    Message,
    Plan,
    VolumeCheck,
    address_of,
    contact_key,
    expected_value,
)
from lifecycle.rules import sms
from lifecycle.rules.assignment import assign_variant, in_control_group
from lifecycle.rules.compiled import CompiledVariant, Rules
from lifecycle.rules.models import DynamicOffer, VolumeGuard
from lifecycle.rules.templates import RENDER_ERRORS, render, template_context
from lifecycle.settings import Settings

# --------------------------------------------------------------------------- deciding


def _count_within(entries: list[tuple[date, str, str]], plan_date: date, days: int, pred) -> int:
    # A cap of N per `days` days counts the days before D inside the window; D's message is the
    # one being decided.
    start = plan_date - timedelta(days=days)
    return sum(1 for d, ch, ph in entries if d > start and pred(ch, ph))


def _capped(caps, entries, plan_date, pred) -> bool:
    return any(_count_within(entries, plan_date, cap.days, pred) >= cap.max for cap in caps)


def offer_for(
    c: Candidate, variant: CompiledVariant, next_best: dict[str, list[tuple[str, int]]] | None
) -> dict:
    """The offer the candidate's templates see: the variant's, or for ``from:
    next_best_offer`` the best-ranked catalog service the member lacks, else the fallback."""
    if isinstance(variant.offer, DynamicOffer):
        return variant.offer.choose((next_best or {}).get(c.customer_id))
    return variant.offer.model_dump()


def _render_for(
    c: Candidate, variant: CompiledVariant, channel: str, offer: dict | None = None
) -> tuple[str | None, str, int | None]:
    """(subject, body, sms segments) of the candidate's message on a channel (may raise)."""
    if offer is None:
        offer = offer_for(c, variant, None)
    ctx = template_context(c.facts, offer, variant.name)
    if channel == "sms":
        assert variant.templates.sms is not None  # rules validation requires it
        body = render(variant.templates.sms, ctx)
        return None, body, sms.segments(body)
    if channel == "call":
        assert variant.templates.call is not None
        return None, " ".join(render(variant.templates.call, ctx).split()), None
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
    taken: set[tuple[str, str]],
    next_best: dict[str, list[tuple[str, int]]] | None = None,
    calls: CallDesk | None = None,
) -> Message | str:
    """The first usable channel in the step's preference as a Message, else a skip reason.

    The reason is the one of the first channel with a valid contact (what stopped the channel
    the customer could have been reached on), or no_contact when there is none. A call needs
    what an SMS needs (a valid phone with consent: the consent the club records for the phone
    number), a free place in the club's call capacity for the day, and fewer unanswered calls
    of the step than policy.calls.max_attempts.
    """
    facts = c.facts
    first_reason: str | None = None
    channel_caps = rules.policy.channel_caps
    offer = offer_for(c, variant, next_best)
    for ch in c.phase.channels(c.step):
        valid = bool(facts.get("email_valid" if ch == "email" else "phone_valid"))
        reason: str
        if not facts.get("email_contactable" if ch == "email" else "sms_contactable"):
            reason = NO_CONSENT if valid else NO_CONTACT
        elif (c.customer_id, ch) in suppressions:
            reason = SUPPRESSION_SKIPS.get(suppressions[(c.customer_id, ch)], SUPPRESSED)
        elif _capped(
            getattr(channel_caps, ch), entries, plan_date, lambda sent_ch, _, ch=ch: sent_ch == ch
        ):
            reason = CAPPED
        elif contact_key(ch, address_of(ch, facts)) in taken:
            reason = SHARED_CONTACT  # another customer record has this address's message today
        elif ch == "call" and calls is not None and calls.attempts_left(c) <= 0:
            reason = CALL_ATTEMPTS
        elif ch == "call" and calls is not None and not calls.has_room(facts.get("club_id")):
            reason = CALL_CAPACITY
        else:
            try:
                subject, body, segments = _render_for(c, variant, ch, offer)
            except RENDER_ERRORS:
                reason = RENDER_FAILED
            else:
                if segments is not None and segments > c.phase.phase.max_sms_segments:
                    reason = TOO_LONG
                else:
                    to = address_of(ch, facts)
                    return Message(
                        c,
                        ch,
                        variant.name,
                        to,
                        subject,
                        body,
                        segments,
                        offer_code=offer.get("code"),
                        offer_source=offer.get("source"),
                    )
        if valid and first_reason is None:
            first_reason = reason
    return first_reason or NO_CONTACT


class CallDesk:
    """Each club's calls for the day: the places its capacity has left, and the unanswered
    calls of each step so far."""

    def __init__(self, rules: Rules, history: History):
        self.policy = rules.policy.calls
        self.used: dict[str, int] = dict(history.calls_today)
        self.attempts = history.call_attempts

    def attempts_left(self, c: Candidate) -> int:
        return self.policy.max_attempts - self.attempts.get(c.message_key, 0)

    def has_room(self, club_id: str | None) -> bool:
        return self.used.get(club_id or "", 0) < self.policy.capacity(club_id)

    def take(self, club_id: str | None) -> None:
        self.used[club_id or ""] = self.used.get(club_id or "", 0) + 1


def _order(c: Candidate) -> tuple:
    """Phase priority, step, then (steps that may call: the club's capacity goes to the most
    valuable first) expected value, highest first, then customer id."""
    value = expected_value(c) if "call" in c.phase.channels(c.step) else 0.0
    return (c.phase.phase.priority, c.step.number, -value, c.customer_id)


def arbitrate(
    candidates: list[Candidate],
    rules: Rules,
    plan_date: date,
    history: History,
    suppressions: dict[tuple, str] | None = None,
    next_best: dict[str, list[tuple[str, int]]] | None = None,
) -> tuple[list[Message], list[tuple[Candidate, str]], list[Message]]:
    """Decide per customer: ([messages to send], [(candidate, skip reason)], [held back]).

    A control-group customer goes through every rule (consent, contact, suppression, caps,
    priority, shared address, channel, rendering, length) like any other: where its message
    would be written it is held back instead, with skip reason control_group, and the message
    it would have received is returned in the third list. That message takes the customer's
    day and its address as a sent one would, so lower-priority candidates and other records
    on the address are decided as they would be. A control customer stopped by another rule
    gets that rule's reason.

    Each customer's candidates are tried in priority order. An address (channel and normalised
    phone/email) carries one message a day: candidates of all customers are decided in one
    order, phase priority, then step, then customer id, so of the records sharing an address
    the one with the higher-priority message (then the lower customer id) gets it, and the
    others try their next channel or phase (``shared_contact`` where the address was the
    reason). An address already in D's outbox (an earlier run of the day) is taken. An SMS and
    a call reach the same phone: one of them a day.

    Calls: within a step that may call, candidates are decided by expected value (lifetime
    revenue x offer margin), highest first, so each club's daily capacity
    (policy.calls) goes to its most valuable candidates; past it, a candidate tries the step's
    next channel (``call_capacity`` where nothing else is left). A control customer's
    would-have call takes its place in the capacity as a call would.
    """
    suppressions = suppressions or {}
    policy = rules.policy
    cg = policy.control_group
    by_customer: dict[str, list[Candidate]] = defaultdict(list)
    for c in candidates:
        by_customer[c.customer_id].append(c)
    taken = set(history.addresses)
    for c in candidates:  # D's control would-haves of an earlier run hold their address
        held_channel = history.held_today.get(c.customer_id)
        if held_channel is not None:
            taken.add(contact_key(held_channel, address_of(held_channel, c.facts)))
    chosen: dict[str, Message] = {}
    held: set[str] = set()
    skipped: dict[str, list[tuple[Candidate, str]]] = defaultdict(list)
    capped: dict[str, bool] = {}
    calls = CallDesk(rules, history)
    order = sorted(candidates, key=_order)
    for c in order:
        customer_id = c.customer_id
        skips = skipped[customer_id]
        if customer_id in history.today:
            if c.message_key != history.today[customer_id]:
                skips.append((c, ALREADY_PLANNED_TODAY))
            continue
        entries = history.sent.get(customer_id, [])
        if customer_id not in capped:
            capped[customer_id] = _capped(
                policy.frequency_caps, entries, plan_date, lambda ch, ph: True
            )
        if customer_id in chosen:
            skips.append((c, LOWER_PRIORITY))
        elif c.message_key in history.keys:
            skips.append((c, ALREADY_SENT))
        elif capped[customer_id] or _capped(
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
            outcome = _decide_channel(
                c, variant, rules, plan_date, entries, suppressions, taken, next_best, calls
            )
            if isinstance(outcome, Message):
                chosen[customer_id] = outcome
                taken.add(contact_key(outcome.channel, outcome.to_address))
                if outcome.channel == "call":
                    calls.take(c.facts.get("club_id"))
                if in_control_group(customer_id, cg.percent, cg.salt):
                    held.add(customer_id)
                    skips.append((c, CONTROL_GROUP))
            else:
                skips.append((c, outcome))
    # Customers in the order they came (by phase, then customer id): samples stay stable.
    messages = [chosen[cid] for cid in by_customer if cid in chosen and cid not in held]
    control = [chosen[cid] for cid in by_customer if cid in held]
    return messages, [s for cid in by_customer for s in skipped[cid]], control


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
    # keep-alive last: ranked after every phase, so a phase message always wins the day
    candidates = select_candidates(conn, rules, plan_date, settings)
    candidates += select_keep_alive(conn, rules, plan_date, settings)
    ids = sorted({c.customer_id for c in candidates})
    history = load_history(conn, ids, plan_date, lookback_days(rules))
    if any(p.uses_call() for p in rules.phases):
        history.calls_today = load_calls_today(conn, plan_date, settings)
    phones = {c.customer_id: c.facts.get("phone") for c in candidates}
    emails = {c.customer_id: c.facts.get("email") for c in candidates}
    suppressions = load_suppressions(conn, ids, phones, emails)
    # customers of steps with an offer chosen per member (any variant): read their rankings
    dynamic = sorted({
        c.customer_id for c in candidates
        if any(isinstance(v.offer, DynamicOffer) for v in c.step.variants)
    })
    next_best = load_next_best_offers(conn, dynamic, rules, settings) if dynamic else None
    messages, skips, held = arbitrate(
        candidates, rules, plan_date, history, suppressions, next_best=next_best
    )
    if rules.policy.send_time.mode == "habit":
        usual = load_send_minutes(
            conn, [m.customer_id for m in messages], rules.policy.send_time.min_visits, settings
        )
        messages = [replace(m, usual_minute=usual.get(m.customer_id)) for m in messages]
    volume = check_volume(conn, rules.policy.volume_guard, plan_date, len(messages))
    already = [c for c in candidates if history.today.get(c.customer_id) == c.message_key]
    return Plan(plan_date, as_of, candidates, messages, skips, volume, already, held)
