"""Drain due outbox rows through a transport: claim, send, record. At most once per row.

A row is claimed (``planned -> claimed``, with a lease) in its own committed transaction before
anything is sent, with ``FOR UPDATE SKIP LOCKED`` so several dispatchers never take the same row.
A claimed row whose worker vanished is never re-sent: when its lease runs out it becomes
``unknown`` for reconciliation (DESIGN.md #4).
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
from datetime import date, datetime, timedelta
from typing import Any

import psycopg

from lifecycle.delivery.throttle import Pacer, WarehouseTokenBucket
from lifecycle.delivery.transports.base import OutboundMessage, SendOutcome, Transport
from lifecycle.settings import Settings, get_settings

CHANNELS = ("sms", "email")


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
LEASE_LOST = "worker lost its lease: send outcome unknown"


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


def expire_and_recover(conn: psycopg.Connection, now: datetime) -> tuple[int, int]:
    """Expire planned rows past their deadline; settle claims whose lease lapsed.

    A lapsed claim never handed to the transport goes back to planned (certainly not sent);
    one that was handed over becomes unknown (it may have been sent). Returns (expired,
    unknown).
    """
    expired = conn.execute(
        "update ops.outbox set status = 'expired', last_error = 'deadline passed before sending', "
        "updated_at = now() where status = 'planned' and deadline_at < %s",
        (now,),
    ).rowcount
    conn.execute(
        "update ops.outbox o set status = 'planned', lease_until = null, updated_at = now() "
        "from ops.dispatch_batches b where b.batch_id = o.batch_id and b.sending_at is null "
        "and o.status = 'claimed' and o.lease_until < %s",
        (now,),
    )
    lost = conn.execute(
        "update ops.outbox set status = 'unknown', last_error = %s, updated_at = now() "
        "where status = 'claimed' and lease_until < %s",
        (LEASE_LOST, now),
    ).rowcount
    return expired, lost


def mark_sending(conn: psycopg.Connection, batch_id: int, at: datetime) -> None:
    """Record (committed) that a claimed batch is being handed to the transport now."""
    conn.execute("update ops.dispatch_batches set sending_at = %s where batch_id = %s",
                 (at, batch_id))
    conn.commit()


# Suppression reason -> the skip reason an outbox row gets (as planning's SUPPRESSION_SKIPS).
_SKIP_SUPPRESSED = """
with hit as (
    -- the customer is suppressed on the channel, or the address the row goes to is
    select o.outbox_id,
           case coalesce(s.reason, a.reason) when 'manual' then 'suppressed'
                else coalesce(s.reason, a.reason) end as reason
    from ops.outbox o
    left join ops.suppressions s on s.customer_id = o.customer_id and s.channel = o.channel
    left join ops.address_suppressions a on a.channel = o.channel and a.address = o.to_address
    where o.status = 'planned' and (s.customer_id is not null or a.address is not null)
    for update of o skip locked
)
update ops.outbox o set status = 'expired', last_error = hit.reason, updated_at = now()
from hit where o.outbox_id = hit.outbox_id
"""


def skip_suppressed(conn: psycopg.Connection) -> int:
    """Expire planned rows whose customer is suppressed on the row's channel (not committed).

    ``last_error`` is the skip reason (opted_out, hard_bounce, spam_complaint, suppressed): an
    opt-out received after planning stops that day's pending messages (DESIGN.md #4: expired =
    certainly not sent; the step's key is released, and planning skips while suppressed).
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
) -> Batch:
    """Claim up to ``limit`` due rows as one batch (committed before returning)."""
    # Due: send_at reached and still inside the send window of its day. With ``plan_date``
    # (logical clock), every planned row of that date counts as due at its own send_at.
    if plan_date is not None:
        due = "plan_date = %(plan_date)s and send_at <= %(now)s"
    else:
        due = "send_at <= %(now)s and %(now)s <= window_end_at"
    skip_suppressed(conn)
    (batch_id,) = conn.execute("select nextval('ops.dispatch_batches_batch_id_seq')").fetchone()
    # Rows are turned into tuples 2,000 at a time: one conversion of 50,000 would hold every
    # thread of the process (sends due meanwhile start late).
    cur = conn.execute(
        f"""
        with due as (
            select outbox_id from ops.outbox o
            where status = 'planned' and {due}
              and (%(channel)s::text is null or channel = %(channel)s)
              -- checked at claim time: a suppression committed after the skip above holds too
              and not exists (select 1 from ops.suppressions s
                              where s.customer_id = o.customer_id and s.channel = o.channel)
              and not exists (select 1 from ops.address_suppressions a
                              where a.channel = o.channel and a.address = o.to_address)
            order by send_at, outbox_id
            limit %(limit)s
            for update skip locked
        )
        update ops.outbox o
        set status = 'claimed', lease_until = %(lease_until)s, attempts = attempts + 1,
            batch_id = %(batch_id)s, updated_at = now()
        from due where o.outbox_id = due.outbox_id
        returning o.outbox_id, o.message_key, o.customer_id, o.phase, o.step, o.channel,
                  o.to_address, o.subject, o.body
        """,
        {
            "now": now,
            "channel": channel,
            "limit": limit,
            "plan_date": plan_date,
            "lease_until": now + lease,
            "batch_id": batch_id,
        },
    )
    rows = [r for chunk in iter(lambda: cur.fetchmany(2000), []) for r in chunk]
    if rows:
        conn.execute("insert into ops.dispatch_batches (batch_id, channel, claimed_at) "
                     "values (%s, %s, %s)", (batch_id, channel, now))
    conn.commit()
    return Batch(batch_id, rows)


_STATUS = {
    SendOutcome.SENT: "sent",
    SendOutcome.FAILED: "failed",
    SendOutcome.UNKNOWN: "unknown",
    SendOutcome.RETRY: "planned",
}

# Only rows still ours (claimed), or whose lease lapsed while we waited for the answer that has
# now come (nobody else touches an unknown row but reconciliation), take the outcome; the
# others are written back as they are. The condition is in the SET, not the WHERE: the
# statuses of a just-claimed batch are not in the table's statistics yet, and as a WHERE
# condition the planner expects a row or two and nests a loop over the whole batch for each
# (seen: 461 s for 50,000 rows with 1M in the outbox).
_MINE = "(o.status = 'claimed' or (o.status = 'unknown' and o.last_error = %(lease_lost)s))"
_RECORD = f"""
update ops.outbox o
set status = case when {_MINE} then r.status else o.status end,
    provider_id = case when {_MINE} then coalesce(r.provider_id, o.provider_id)
                       else o.provider_id end,
    last_error = case when {_MINE} then r.error else o.last_error end,
    lease_until = case when {_MINE} then null else o.lease_until end,
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
    """Write each send's outcome in one statement; only rows still claimed by us change."""
    counts: Counter = Counter(r.outcome.value for r in results)
    conn.execute(
        _RECORD,
        {
            "at": sent_at,
            "lease_lost": LEASE_LOST,
            "ids": messages.outbox_ids(),
            "statuses": [_STATUS[r.outcome] for r in results],
            "provider_ids": [r.provider_id for r in results],
            "errors": [r.error for r in results],
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


def batch_limit(channel: str, settings: Settings, bucket: WarehouseTokenBucket | None) -> int:
    """Rows to claim at once: the channel's batch size, or what the rate sends in
    ``dispatch_batch_s``.

    A batch never holds more than that much traffic, so its leases cannot lapse while it waits
    for the rate limit, and other workers keep a share of the outbox. Email counts requests of
    up to 1000 personalizations.
    """
    if channel == "email":
        size = settings.dispatch_email_batch_size
    else:
        size = settings.dispatch_batch_size
    if bucket is None:
        return size
    per_cost = 1000 if channel == "email" else 1
    return max(1, min(size, int(bucket.rate * per_cost * settings.dispatch_batch_s)))


_frozen_lock = threading.Lock()
_frozen_drains = 0


@contextmanager
def _long_lived_out_of_gc():
    """While draining, what the process already holds (modules, classes: ~80,000 objects in
    a bare dispatcher, far more under Airflow) is left out of garbage collection.

    A full collection walks every tracked object with all threads stopped: ~75 ms of CPU for
    the dispatcher's own, 0.2-0.5 s on a loaded machine, during which due sends pile up.
    ``gc.freeze`` moves them aside in O(1) (nothing is collected or leaked: the objects are
    handed back with ``gc.unfreeze`` when the last drain of the process ends).
    """
    global _frozen_drains
    with _frozen_lock:
        if _frozen_drains == 0:
            gc.freeze()
        _frozen_drains += 1
    try:
        yield
    finally:
        with _frozen_lock:
            _frozen_drains -= 1
            if _frozen_drains == 0:
                gc.unfreeze()


def _drain(url: str, transport: Transport, channel: str | None, clock, *, plan_date,
           settings: Settings, bucket: WarehouseTokenBucket | None,
           max_batches: int | None) -> DispatchReport:
    """Claim, send, record until nothing is due.

    The provider is kept busy: while a batch is sent, the next one is claimed and the outcomes
    of the one before are written, each on its own connection and thread. A claimed batch is
    stamped as handed over, committed, just before it is sent, so a worker that dies with a
    batch claimed but not sent leaves it to be planned again, not unknown.
    """
    report = DispatchReport()
    lease = timedelta(seconds=settings.dispatch_lease_seconds)
    pacer = Pacer(bucket) if bucket is not None else None
    limit = batch_limit(channel or "", settings, bucket)

    def claim_next(conn: psycopg.Connection) -> Batch:
        return claim(conn, now=clock(), lease=lease, limit=limit, channel=channel,
                     plan_date=plan_date)

    recorded = []
    try:
        with (_long_lived_out_of_gc(), psycopg.connect(url) as conn,
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
                mark_sending(conn, messages.batch_id, clock())
                more = max_batches is None or batches < max_batches
                upcoming = claimer.submit(claim_next, claim_conn) if more else None
                results = transport.send_batch(messages, pacer=pacer)
                recorded.append(recorder.submit(record, record_conn, messages, results, clock()))
            for done in recorded:
                report.outcomes.update(done.result())
    finally:
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
    moves on with the elapsed time, so leases stay right during a long drain. Each message
    waits for its provider's shared rate: ``throttles`` (channel -> bucket), by default the
    settings' buckets of a real transport (none for the sandbox); ``{}`` sends unthrottled.
    """
    settings = settings or get_settings()
    own = throttles is None
    throttles = throttles_for(url, settings) if own else throttles
    started = time.monotonic()

    def clock() -> datetime:
        return now + timedelta(seconds=time.monotonic() - started)

    report = DispatchReport()
    try:
        with psycopg.connect(url) as conn:
            report.expired, report.lease_lost = expire_and_recover(conn, now)
            conn.commit()
        if throttles:
            # Each channel drains on its own thread at its provider's pace: a slow SMS rate
            # does not hold email back.
            channels = [channel] if channel else CHANNELS
            with ThreadPoolExecutor(max_workers=len(channels)) as pool:
                futures = [pool.submit(_drain, url, transport, ch, clock, plan_date=plan_date,
                                       settings=settings, bucket=throttles.get(ch),
                                       max_batches=max_batches) for ch in channels]
                parts = [f.result() for f in futures]
        else:
            parts = [_drain(url, transport, channel, clock, plan_date=plan_date,
                            settings=settings, bucket=None, max_batches=max_batches)]
    finally:
        if own:
            for bucket in throttles.values():
                bucket.close()
    for part in parts:
        report.claimed += part.claimed
        report.outcomes.update(part.outcomes)
    return report
