"""Drain due outbox rows through a transport: claim, send, record. At most once per row.

A row is claimed (``planned -> claimed``, with a lease) in its own committed transaction before
anything is sent, with ``FOR UPDATE SKIP LOCKED`` so several dispatchers never take the same row.
A claimed row whose worker vanished is never re-sent: when its lease runs out it becomes
``unknown`` for reconciliation (DESIGN.md #4).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import psycopg

from lifecycle.settings import Settings, get_settings
from lifecycle.throttle import WarehouseTokenBucket
from lifecycle.transports.base import OutboundMessage, SendOutcome, SendResult, Transport


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
    """Expire planned rows past their deadline; turn claimed rows with a lapsed lease unknown."""
    expired = conn.execute(
        "update ops.outbox set status = 'expired', last_error = 'deadline passed before sending', "
        "updated_at = now() where status = 'planned' and deadline_at < %s",
        (now,),
    ).rowcount
    lost = conn.execute(
        "update ops.outbox set status = 'unknown', "
        "last_error = 'worker lost its lease: send outcome unknown', updated_at = now() "
        "where status = 'claimed' and lease_until < %s",
        (now,),
    ).rowcount
    return expired, lost


# Suppression reason -> the skip reason an outbox row gets (as planning's SUPPRESSION_SKIPS).
_SKIP_SUPPRESSED = """
with hit as (
    select o.outbox_id,
           case s.reason when 'manual' then 'suppressed' else s.reason end as reason
    from ops.outbox o
    join ops.suppressions s on s.customer_id = o.customer_id and s.channel = o.channel
    where o.status = 'planned'
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
) -> list[OutboundMessage]:
    """Claim up to ``limit`` due rows (committed before returning)."""
    # Due: send_at reached and still inside the send window of its day. With ``plan_date``
    # (logical clock), every planned row of that date counts as due at its own send_at.
    if plan_date is not None:
        due = "plan_date = %(plan_date)s and send_at <= %(now)s"
    else:
        due = "send_at <= %(now)s and %(now)s <= window_end_at"
    skip_suppressed(conn)
    rows = conn.execute(
        f"""
        with due as (
            select outbox_id from ops.outbox o
            where status = 'planned' and {due}
              and (%(channel)s::text is null or channel = %(channel)s)
              -- checked at claim time: a suppression committed after the skip above holds too
              and not exists (select 1 from ops.suppressions s
                              where s.customer_id = o.customer_id and s.channel = o.channel)
            order by send_at, outbox_id
            limit %(limit)s
            for update skip locked
        )
        update ops.outbox o
        set status = 'claimed', lease_until = %(lease_until)s, attempts = attempts + 1,
            updated_at = now()
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
        },
    ).fetchall()
    conn.commit()
    return [OutboundMessage(*r) for r in rows]


_STATUS = {
    SendOutcome.SENT: "sent",
    SendOutcome.FAILED: "failed",
    SendOutcome.UNKNOWN: "unknown",
    SendOutcome.RETRY: "planned",
}


def record(conn: psycopg.Connection, messages, results, sent_at: datetime) -> Counter:
    """Write each send's outcome; only rows still claimed by us are touched."""
    counts: Counter = Counter()
    params = []
    for m, r in zip(messages, results, strict=True):
        counts[r.outcome.value] += 1
        params.append(
            (
                _STATUS[r.outcome],
                r.provider_id,
                r.error,
                sent_at if r.outcome is SendOutcome.SENT else None,
                m.outbox_id,
            )
        )
    with conn.cursor() as cur:
        cur.executemany(
            "update ops.outbox set status = %s, provider_id = coalesce(%s, provider_id), "
            "last_error = %s, sent_at = %s, lease_until = null, updated_at = now(), "
            # A certain non-send goes back to planned, due again after an exponential backoff
            # (30 s, 1 min, 2 min, ... at most 1 h, each x0.75-1.25 jitter so retries of one
            # outage do not return together); its deadline still bounds it.
            "send_at = case when %s then %s + least(3600, 30 * 2 ^ (attempts - 1)) "
            "* (0.75 + random() / 2) * interval '1 second' else send_at end "
            "where outbox_id = %s and status = 'claimed'",
            [p[:4] + (p[0] == "planned", sent_at, p[4]) for p in params],
        )
    conn.commit()
    return counts


def message_cost(m: OutboundMessage) -> float:
    """What a message takes from its provider's rate: SMS segments, one per email."""
    if m.channel == "sms":
        from lifecycle.sms import segments

        return float(segments(m.body))
    return 1.0


def _send_paced(transport: Transport, messages: list[OutboundMessage],
                throttles: dict[str, WarehouseTokenBucket]) -> list[SendResult]:
    """Send one by one, each when its provider's shared bucket allows; a 429 slows everyone."""
    results = []
    for m in messages:
        bucket = throttles.get(m.channel)
        if bucket is not None:
            bucket.acquire(message_cost(m))
        (result,) = transport.send_batch([m])
        if bucket is not None and result.retry_after:
            bucket.penalize(result.retry_after)
        results.append(result)
    return results


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
    """Send every due row (of one channel, or all) until none is left.

    With ``throttles`` (channel -> shared bucket) each message waits for its provider's rate.
    """
    settings = settings or get_settings()
    report = DispatchReport()
    lease = timedelta(seconds=settings.dispatch_lease_seconds)
    with psycopg.connect(url) as conn:
        report.expired, report.lease_lost = expire_and_recover(conn, now)
        conn.commit()
        batches = 0
        while max_batches is None or batches < max_batches:
            messages = claim(
                conn,
                now=now,
                lease=lease,
                limit=settings.dispatch_batch_size,
                channel=channel,
                plan_date=plan_date,
            )
            if not messages:
                break
            batches += 1
            report.claimed += len(messages)
            if throttles:
                results = _send_paced(transport, messages, throttles)
            else:
                results = transport.send_batch(messages)
            report.outcomes.update(record(conn, messages, results, now))
    return report
