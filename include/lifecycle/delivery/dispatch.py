"""Drain due outbox rows through a transport: claim, send, record. At most once per row.

A row is claimed (``planned -> claimed``, with a lease) in its own committed transaction before
anything is sent, with ``FOR UPDATE SKIP LOCKED`` so several dispatchers never take the same row.
The claim's batch id is its fencing token. Immediately before each provider request the
transport hands its rows over (``hand_over``): one statement that checks the rows are still
claimed by this batch and stamps ``handed_at``; rows that fail the check are not sent. Outcomes
are written only to rows still held by the batch. So a dispatcher whose claim lapsed (a frozen
process, a stopped VM) sends nothing of it when it wakes, and a lapsed claim is settled row by
row: never handed over, it is planned again (certainly not sent); handed over, it becomes
``unknown`` for reconciliation and is never sent again (docs/architecture.md, decision 4).
While a dispatcher is healthy a heartbeat keeps the leases of the batches it holds alive.
"""

from __future__ import annotations

import gc
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg

from lifecycle.contacts import CHANNEL_KIND
from lifecycle.delivery.leases import (
    LEASE_LOST,
    HandOvers,
    Heartbeat,
    expire_and_recover,
)
from lifecycle.delivery.recheck import CONVERTED_BEFORE_SEND, Recheck
from lifecycle.delivery.throttle import Pacer, WarehouseTokenBucket
from lifecycle.delivery.transports.base import OutboundMessage, SendOutcome, Transport
from lifecycle.rules.sms import segments
from lifecycle.settings import Settings, get_settings

# The channels dispatch sends. A call (channel 'call') is never claimed: the front desk makes
# it from the call list (lifecycle.calls) and its outcome comes back as a file.
CHANNELS = ("sms", "email")
# The kind of contact (ops.dead_contacts.kind) an outbox row's channel goes to, as SQL on the
# row `o`: lifecycle.contacts.CHANNEL_KIND (a phone serves sms and call, an email email).
_CONTACT_KIND = ("case o.channel "
                 + " ".join(f"when '{ch}' then '{kind}'" for ch, kind in CHANNEL_KIND.items())
                 + " end")


class Batch(Sequence[OutboundMessage]):
    """The messages of one claim, and the claim's id (``ops.dispatch_batches``).

    It keeps the claimed rows as plain tuples and makes each message when it is read. Tuples
    of strings and numbers drop out of the garbage collector's tracking; 50,000 message
    objects per batch, alive for seconds, did not, and each full collection walked all of
    them: 0.2-0.5 s pauses of every thread, in which due sends bunched up behind (what a
    provider's rate limit refuses).
    """

    def __init__(self, batch_id: int, rows: list[tuple]):
        self._rows = rows
        self.batch_id = batch_id

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [OutboundMessage._make(r) for r in self._rows[i]]
        return OutboundMessage._make(self._rows[i])

    def __iter__(self) -> Iterator[OutboundMessage]:
        return map(OutboundMessage._make, self._rows)

    def outbox_ids(self) -> list[int]:
        return [r[0] for r in self._rows]

    def channels(self) -> set[str]:
        i = OutboundMessage._fields.index("channel")
        return {r[i] for r in self._rows}
@dataclass
class DispatchReport:
    claimed: int = 0
    outcomes: Counter = field(default_factory=Counter)
    expired: int = 0
    lease_lost: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "claimed": self.claimed,
            "outcomes": dict(self.outcomes),
            "expired": self.expired,
            "lease_lost": self.lease_lost,
        }


_SKIP_SUPPRESSED = f"""
with hit as (
    -- the customer is suppressed on the channel, or the address the row goes to is, or the
    -- address is dead (lifecycle.contacts: a phone serves sms and call, an email email)
    select o.outbox_id,
           case coalesce(s.reason, a.reason, cs.reason, ca.reason) when 'manual' then 'suppressed'
                else coalesce(s.reason, a.reason, cs.reason, ca.reason, 'dead_contact') end
           as reason
    from ops.outbox o
    left join ops.suppressions s on s.customer_id = o.customer_id and s.channel = o.channel
    left join ops.address_suppressions a on a.channel = o.channel and a.address = o.to_address
    -- a call goes to the phone: whatever stops SMS to it stops the call
    left join ops.suppressions cs on o.channel = 'call' and cs.customer_id = o.customer_id
                                  and cs.channel = 'sms'
    left join ops.address_suppressions ca on o.channel = 'call' and ca.channel = 'sms'
                                          and ca.address = o.to_address
    left join ops.dead_contacts d
           on d.kind = {_CONTACT_KIND}
          and d.address = o.to_address
    where o.status = 'planned'
      and (s.customer_id is not null or a.address is not null or d.address is not null
           or cs.customer_id is not null or ca.address is not null)
    for update of o skip locked
)
update ops.outbox o set status = 'expired', last_error = hit.reason, updated_at = now()
from hit where o.outbox_id = hit.outbox_id
"""


def skip_suppressed(conn: psycopg.Connection) -> int:
    """Expire planned rows whose customer, or the address they go to, is suppressed on the
    row's channel (not committed).

    ``last_error`` is the skip reason (opted_out, hard_bounce, spam_complaint, suppressed,
    dead_contact): an
    opt-out received after planning stops that day's pending messages (docs/architecture.md #4:
    expired = certainly not sent; the step's key is released, and planning skips while
    suppressed).
    """
    return conn.execute(_SKIP_SUPPRESSED).rowcount


def claim(
    conn: psycopg.Connection,
    *,
    now: datetime,
    lease: timedelta,
    limit: int,
    channel: str | None = None,
    plan_date: date | None = None,
    lease_now: datetime | None = None,
    max_segments: int | None = None,
) -> Batch:
    """Claim up to ``limit`` due rows as one batch (committed before returning).

    ``max_segments``: the batch's SMS rows carry at most that many segments in all (what a
    rate in segments can send in the batch's time; at least one row). ``lease_now`` (default
    ``now``) is the clock the lease runs on.
    """
    # Due: send_at reached and still inside the send window of its day. With ``plan_date``
    # (logical clock), every planned row of that date counts as due at its own send_at.
    if plan_date is not None:
        due = "plan_date = %(plan_date)s and send_at <= %(now)s"
    else:
        due = "send_at <= %(now)s and %(now)s <= window_end_at"
    skip_suppressed(conn)
    (batch_id,) = conn.execute("select nextval('ops.dispatch_batches_batch_id_seq')").fetchone()
    params = {
        "now": now,
        "channel": channel,
        "limit": limit,
        "plan_date": plan_date,
        "lease_until": (lease_now or now) + lease,
        "batch_id": batch_id,
    }
    due_rows = f"""
        select outbox_id from ops.outbox o
        where status = 'planned' and {due}
          and (%(channel)s::text is null or channel = %(channel)s)
          and channel <> 'call'  -- the front desk makes calls, not a provider
          -- checked at claim time: a suppression committed after the skip above holds too
          and not exists (select 1 from ops.suppressions s
                          where s.customer_id = o.customer_id and s.channel = o.channel)
          and not exists (select 1 from ops.address_suppressions a
                          where a.channel = o.channel and a.address = o.to_address)
          and not exists (select 1 from ops.dead_contacts d
                          where d.kind = {_CONTACT_KIND}
                            and d.address = o.to_address)
        order by send_at, outbox_id
        limit %(limit)s
        for update skip locked
    """
    if max_segments is not None:
        # Locked first, then cut where the segments run out: the rows past the cut are left
        # planned (their locks go with the commit).
        locked = conn.execute(due_rows.replace("select outbox_id from",
                                               "select outbox_id, channel, body from"),
                              params).fetchall()
        params["ids"] = _within_segments(locked, max_segments)
        due_rows = "select unnest(%(ids)s::bigint[]) as outbox_id"
    # Rows are turned into tuples 2,000 at a time: one conversion of 50,000 would hold every
    # thread of the process (sends due meanwhile start late).
    cur = conn.execute(
        f"""
        with due as ({due_rows})
        update ops.outbox o
        set status = 'claimed', lease_until = %(lease_until)s, attempts = attempts + 1,
            batch_id = %(batch_id)s, handed_at = null, updated_at = now()
        from due where o.outbox_id = due.outbox_id
        returning o.outbox_id, o.message_key, o.customer_id, o.phase, o.step, o.channel,
                  o.to_address, o.subject, o.body
        """,
        params,
    )
    rows = [r for chunk in iter(lambda: cur.fetchmany(2000), []) for r in chunk]
    if rows:
        conn.execute("insert into ops.dispatch_batches (batch_id, channel, claimed_at) "
                     "values (%s, %s, %s)", (batch_id, channel, now))
    conn.commit()
    return Batch(batch_id, rows)


def _within_segments(rows: list[tuple], max_segments: int) -> list[int]:
    """Ids of the leading (id, channel, body) rows whose SMS segments fit in ``max_segments``
    (an email row costs nothing here; the first row always fits)."""
    ids: list[int] = []
    total = 0
    for outbox_id, channel, body in rows:
        cost = segments(body) if channel == "sms" else 0
        if ids and total + cost > max_segments:
            break
        ids.append(outbox_id)
        total += cost
    return ids


_STATUS = {
    SendOutcome.SENT: "sent",
    SendOutcome.FAILED: "failed",
    SendOutcome.UNKNOWN: "unknown",
    SendOutcome.RETRY: "planned",
}

# Only rows still held by this batch (claimed), or whose lease lapsed while we waited for the
# answer that has now come (nobody else touches an unknown row but reconciliation), take the
# outcome; the others are written back as they are. The batch id is the fencing token: a row
# recovered and claimed again by another dispatcher is not ours, whatever its status. The
# condition is in the SET, not the WHERE: the statuses of a just-claimed batch are not in the
# table's statistics yet, and as a WHERE condition the planner expects a row or two and nests a
# loop over the whole batch for each (seen: 461 s for 50,000 rows with 1M in the outbox).
_MINE = ("(o.batch_id = %(batch_id)s and (o.status = 'claimed' "
         "or (o.status = 'unknown' and o.last_error = %(lease_lost)s)))")
_RECORD = f"""
update ops.outbox o
set status = case when {_MINE} then r.status else o.status end,
    provider_id = case when {_MINE} then coalesce(r.provider_id, o.provider_id)
                       else o.provider_id end,
    last_error = case when {_MINE} then r.error else o.last_error end,
    lease_until = case when {_MINE} then null else o.lease_until end,
    -- certainly not delivered (refused, or to be retried): not handed over after all
    handed_at = case when {_MINE} and r.status in ('planned', 'failed') then null
                     else o.handed_at end,
    updated_at = case when {_MINE} then now() else o.updated_at end,
    sent_at = case when not {_MINE} then o.sent_at when r.status = 'sent' then %(at)s end,
    -- A certain non-send goes back to planned, due again after an exponential backoff (30 s,
    -- 1 min, 2 min, ... at most 1 h, each x0.75-1.25 jitter so retries of one outage do not
    -- return together); its deadline still bounds it.
    send_at = case when {_MINE} and r.status = 'planned'
                   then %(at)s + least(3600, 30 * 2 ^ (o.attempts - 1))
                        * (0.75 + random() / 2) * interval '1 second'
                   else o.send_at end
from unnest(%(ids)s::bigint[], %(statuses)s::text[], %(provider_ids)s::text[],
            %(errors)s::text[]) as r (outbox_id, status, provider_id, error)
where o.outbox_id = any(%(ids)s) and o.outbox_id = r.outbox_id
"""


def record(conn: psycopg.Connection, messages: Batch, results, sent_at: datetime) -> Counter:
    """Write each send's outcome in one statement; only rows still held by the batch change.

    Rows the transport did not send because their claim was lost (``NOT_HANDED``) are left to
    whoever holds them now.
    """
    counts: Counter = Counter(r.outcome.value for r in results)
    kept = [(i, r) for i, r in zip(messages.outbox_ids(), results, strict=True)
            if r.outcome is not SendOutcome.NOT_HANDED]
    conn.execute(
        _RECORD,
        {
            "at": sent_at,
            "lease_lost": LEASE_LOST,
            "batch_id": messages.batch_id,
            "ids": [i for i, _ in kept],
            "statuses": [_STATUS[r.outcome] for _, r in kept],
            "provider_ids": [r.provider_id for _, r in kept],
            "errors": [r.error for _, r in kept],
        },
    )
    conn.commit()
    return counts


def throttles_for(url: str, settings: Settings) -> dict[str, WarehouseTokenBucket]:
    """The shared buckets of the providers behind a real transport (none for the sandbox)."""
    if settings.transport == "sandbox":
        return {}
    return {
        "sms": WarehouseTokenBucket(url, f"{settings.transport}:twilio",
                                    settings.twilio_segments_per_s),
        "email": WarehouseTokenBucket(url, f"{settings.transport}:sendgrid",
                                      settings.sendgrid_requests_per_s),
    }


def batch_limit(channel: str, settings: Settings,
                bucket: WarehouseTokenBucket | None) -> tuple[int, int | None]:
    """(rows, SMS segments) to claim at once: the channel's batch size, or what the rate sends
    in ``dispatch_batch_s``, and never more than a third of the lease.

    A batch never holds more traffic than that, so neither it nor the batch claimed while it is
    sent can see its lease lapse while waiting for the rate limit (the heartbeat keeps them
    alive besides), and other workers keep a share of the outbox. The rate counts what the
    provider counts: SMS segments (a long text is several), email requests of up to 1000
    personalizations.
    """
    if channel == "email":
        size = settings.dispatch_email_batch_size
    else:
        size = settings.dispatch_batch_size
    if bucket is None:
        return size, None
    seconds = min(settings.dispatch_batch_s, settings.dispatch_lease_seconds / 3)
    if channel == "email":
        return max(1, min(size, int(bucket.rate * 1000 * seconds))), None
    budget = max(1, int(bucket.rate * seconds))
    return min(size, budget), budget


_frozen_lock = threading.Lock()
_frozen_drains = 0
_frozen_by_us = False


@contextmanager
def _long_lived_out_of_gc():
    """While draining, what the process already holds (modules, classes: ~80,000 objects in
    a bare dispatcher, far more under Airflow) is left out of garbage collection.

    A full collection walks every tracked object with all threads stopped: ~75 ms of CPU for
    the dispatcher's own, 0.2-0.5 s on a loaded machine, during which due sends pile up.
    ``gc.freeze`` moves them aside in O(1) (nothing is collected or leaked: the objects are
    handed back with ``gc.unfreeze`` when the last drain of the process ends). A process that
    had frozen objects itself before the first drain (``scripts/run_daily.py`` freezes what
    each day leaves) keeps them frozen: ``gc.unfreeze`` cannot tell its objects from ours, and
    handing its ~850,000 back made every later full collection walk them (0.5-0.7 s a day).
    """
    global _frozen_drains, _frozen_by_us
    with _frozen_lock:
        if _frozen_drains == 0:
            _frozen_by_us = gc.get_freeze_count() == 0
            gc.freeze()
        _frozen_drains += 1
    try:
        yield
    finally:
        with _frozen_lock:
            _frozen_drains -= 1
            if _frozen_drains == 0 and _frozen_by_us:
                gc.unfreeze()


def _drain(url: str, transport: Transport, channel: str | None, clock, lease_clock, *,
           plan_date, settings: Settings, bucket: WarehouseTokenBucket | None,
           max_batches: int | None) -> DispatchReport:
    """Claim, send, record until nothing is due.

    The provider is kept busy: while a batch is sent, the next one is claimed and the outcomes
    of the one before are written, each on its own connection and thread. Each provider
    request hands its rows over first (``hand_over``), so a worker that dies leaves unknown
    only the rows of the requests it had in flight; the rest of its claims are planned again.
    """
    report = DispatchReport()
    lease = timedelta(seconds=settings.dispatch_lease_seconds)
    pacer = Pacer(bucket) if bucket is not None else None
    limit, max_segments = batch_limit(channel or "", settings, bucket)
    heartbeat = Heartbeat(url, lease, lease_clock)

    def claim_next(conn: psycopg.Connection) -> Batch:
        batch = claim(conn, now=clock(), lease=lease, limit=limit, channel=channel,
                      plan_date=plan_date, lease_now=lease_clock(), max_segments=max_segments)
        heartbeat.hold(batch.batch_id)
        return batch

    def record_and_release(conn: psycopg.Connection, messages: Batch, results) -> Counter:
        try:
            return record(conn, messages, results, clock())
        finally:
            heartbeat.release(messages.batch_id)

    recorded = []
    # the last look before each hand-over: converted since the plan? (delivery.recheck)
    recheck = Recheck(settings.dbt_schema, settings.club_timezone)
    handovers = HandOvers(url, clock, recheck)
    try:
        with (_long_lived_out_of_gc(),
              psycopg.connect(url) as claim_conn, psycopg.connect(url) as record_conn,
              ThreadPoolExecutor(max_workers=1, thread_name_prefix="claim") as claimer,
              ThreadPoolExecutor(max_workers=1, thread_name_prefix="record") as recorder):
            upcoming = claimer.submit(claim_next, claim_conn)
            batches = 0
            while upcoming is not None:
                messages = upcoming.result()
                if not messages:
                    break
                batches += 1
                report.claimed += len(messages)
                more = max_batches is None or batches < max_batches
                upcoming = claimer.submit(claim_next, claim_conn) if more else None
                results = transport.send_batch(messages, pacer=pacer,
                                               handover=handovers.for_batch(messages.batch_id))
                recorded.append(recorder.submit(record_and_release, record_conn, messages,
                                                results))
            for done in recorded:
                report.outcomes.update(done.result())
    finally:
        handovers.close()
        # the transports answer these rows "not handed"; they were expired, not lost
        if recheck.converted:
            report.outcomes[CONVERTED_BEFORE_SEND] += recheck.converted
            report.outcomes[SendOutcome.NOT_HANDED.value] -= recheck.converted
            if report.outcomes[SendOutcome.NOT_HANDED.value] <= 0:
                del report.outcomes[SendOutcome.NOT_HANDED.value]
        heartbeat.close()
        if pacer is not None:
            pacer.close()
    return report


def dispatch(
    url: str,
    transport: Transport,
    *,
    now: datetime,
    channel: str | None = None,
    plan_date: date | None = None,
    settings: Settings | None = None,
    max_batches: int | None = None,
    throttles: dict[str, WarehouseTokenBucket] | None = None,
) -> DispatchReport:
    """Send every due row (of one channel, or of each channel side by side) until none is left.

    ``now`` is the dispatcher's time at the start (the wall clock, or a replayed day's); it
    moves on with the elapsed time, so leases stay right during a long drain. A replay
    (``plan_date``, the logical clock) sends that day's rows as due, but its leases run on the
    wall clock: a replay run again after a crash recovers the crashed run's claims. Each
    message waits for its provider's shared rate: ``throttles`` (channel -> bucket), by default
    the settings' buckets of a real transport (none for the sandbox); ``{}`` sends unthrottled.
    """
    settings = settings or get_settings()
    own = throttles is None
    throttles = throttles_for(url, settings) if own else throttles
    started = time.monotonic()

    def clock() -> datetime:
        return now + timedelta(seconds=time.monotonic() - started)

    def wall_clock() -> datetime:
        return datetime.now(UTC)

    lease_clock = clock if plan_date is None else wall_clock
    report = DispatchReport()
    try:
        with psycopg.connect(url) as conn:
            report.expired, report.lease_lost = expire_and_recover(
                conn, now, lease_now=lease_clock(), plan_date=plan_date)
            conn.commit()
        if throttles:
            # Each channel drains on its own thread at its provider's pace: a slow SMS rate
            # does not hold email back.
            channels = [channel] if channel else CHANNELS
            with ThreadPoolExecutor(max_workers=len(channels)) as pool:
                futures = [pool.submit(_drain, url, transport, ch, clock, lease_clock,
                                       plan_date=plan_date, settings=settings,
                                       bucket=throttles.get(ch), max_batches=max_batches)
                           for ch in channels]
                parts = [f.result() for f in futures]
        else:
            parts = [_drain(url, transport, channel, clock, lease_clock, plan_date=plan_date,
                            settings=settings, bucket=None, max_batches=max_batches)]
    finally:
        if own:
            for bucket in throttles.values():
                bucket.close()
    for part in parts:
        report.claimed += part.claimed
        report.outcomes.update(part.outcomes)
    return report
