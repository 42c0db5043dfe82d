"""Resolve ``unknown`` outbox rows (docs/architecture.md #4: unknown -> sent|expired).

A send whose outcome was ambiguous (a timeout, a cut connection, a lapsed lease) is never re-sent
blindly. The provider decides. First its own events: any event for the row's outbox id from the
row's provider (SendGrid for email, Twilio for SMS) means the provider saw the message, so it is
``sent``. Then, for SMS rows no event named, where the transport can ask (standin, live), Twilio
itself: a message it lists to that number with that text, sent since the row was handed over, is
the row's (``sent``, with Twilio's id). With no answer ``reconcile_deadline_hours`` after the row
turned unknown it is ``expired``; it still holds its key, so its step is never planned again (it
may have gone out: at most once, never twice). Everything else is reported.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import psycopg

from lifecycle.delivery.lookup import LOOKUP_ERRORS, TwilioLookup, lookup_for
from lifecycle.logs import get_logger, mask_phone
from lifecycle.settings import Settings, get_settings

log = get_logger(__name__)

RESOLVED_SENT = "reconciled: the provider reported it ({})"
RESOLVED_LISTED = "reconciled: Twilio lists it ({})"
# Clocks differ: a message Twilio lists as sent up to this long before our hand-over stamp
# still matches (its number and text must too).
CLOCK_SLACK = timedelta(minutes=5)
RESOLVED_EXPIRED = "reconciled: no provider event within {} h of the unknown outcome"

_PROVIDER = "case o.channel when 'sms' then 'twilio' else 'sendgrid' end"


@dataclass
class Unresolved:
    outbox_id: int
    channel: str
    unknown_since: datetime
    expires_at: datetime
    last_error: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "outbox_id": self.outbox_id,
            "channel": self.channel,
            "unknown_since": self.unknown_since.isoformat(),
            "expires_at": self.expires_at.isoformat(),
            "last_error": self.last_error,
        }


@dataclass
class ReconcileReport:
    sent: int = 0  # events and asking together
    expired: int = 0
    asked: int = 0  # unknown SMS rows Twilio was asked about
    found_by_asking: int = 0  # of which Twilio listed the message (counted in sent)
    ask_failed: int = 0  # numbers whose list request failed (their rows stay unknown)
    unresolved: list[Unresolved] = field(default_factory=list)
    # Expired rows a provider event later showed were sent: counted, never re-sent or changed
    # (their key stays taken; rows expired before that rule may have had theirs planned
    # again); for an operator to look at.
    expired_but_seen: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "expired": self.expired,
            "asked": self.asked,
            "found_by_asking": self.found_by_asking,
            "ask_failed": self.ask_failed,
            "unresolved": [u.as_dict() for u in self.unresolved],
            "expired_but_seen": self.expired_but_seen,
        }


_UNKNOWN_SMS = """
select o.outbox_id, o.to_address, o.body,
       coalesce(o.handed_at, b.sending_at, o.updated_at) as since
from ops.outbox o left join ops.dispatch_batches b on b.batch_id = o.batch_id
where o.status = 'unknown' and o.channel = 'sms'
order by o.to_address, since, o.outbox_id
for update of o skip locked
"""


def ask_twilio(conn: psycopg.Connection, lookup: TwilioLookup, report: ReconcileReport) -> None:
    """Resolve unknown SMS rows from Twilio's list of what it sent to their numbers.

    A listed message matches a row with its number and text, sent no earlier than the row was
    handed over (less ``CLOCK_SLACK``), whose id no other outbox row has; each is used once,
    rows and messages taken in time order.
    """
    by_number: dict[str, list[tuple]] = defaultdict(list)
    for row in conn.execute(_UNKNOWN_SMS):
        by_number[row[1]].append(row)
    found: list[tuple[int, str, datetime | None, str]] = []
    for number, rows in by_number.items():
        report.asked += len(rows)
        try:
            listed = lookup.sent_to(number, min(r[3] for r in rows) - CLOCK_SLACK)
        except LOOKUP_ERRORS as exc:
            report.ask_failed += 1
            log.warning("asking Twilio about %s failed: %s", mask_phone(number),
                        type(exc).__name__)
            continue
        known = {pid for (pid,) in conn.execute(
            "select provider_id from ops.outbox where channel = 'sms' "
            "and lower(to_address) = lower(%s) and provider_id is not null", (number,))}
        listed = sorted((m for m in listed if m.sid not in known and m.date_sent is not None),
                        key=lambda m: (m.date_sent, m.sid))
        for outbox_id, _, body, since in rows:
            match = next((m for m in listed if m.body == body
                          and m.date_sent >= since - CLOCK_SLACK), None)
            if match is not None:
                listed.remove(match)
                found.append((outbox_id, match.sid, match.date_sent, match.status or "listed"))
    if found:
        ids, sids, times, statuses = map(list, zip(*found, strict=True))
        report.found_by_asking = conn.execute(
            """
            update ops.outbox o
            set status = 'sent', provider_id = f.sid, sent_at = coalesce(o.sent_at, f.at),
                last_error = format(%(why)s, f.status), lease_until = null, updated_at = now()
            from unnest(%(ids)s::bigint[], %(sids)s::text[], %(times)s::timestamptz[],
                        %(statuses)s::text[]) as f (outbox_id, sid, at, status)
            where o.outbox_id = f.outbox_id and o.status = 'unknown'
            """,
            {"why": RESOLVED_LISTED.replace("{}", "%s"), "ids": ids, "sids": sids,
             "times": times, "statuses": statuses},
        ).rowcount
        report.sent += report.found_by_asking


def reconcile(url: str, *, now: datetime, settings: Settings | None = None,
              lookup: TwilioLookup | None = None) -> ReconcileReport:
    """Resolve unknown rows from ops.message_events, then (standin/live transports, or with
    ``lookup``) by asking Twilio; expire what is past the deadline; report those still open
    (one transaction).

    Rows another transaction holds are left for the next run, not waited for (a dispatcher
    frozen between recording an outcome and its commit holds them while it is frozen: see
    ``leases.expire_and_recover``); they are reported as still unknown."""
    settings = settings or get_settings()
    lookup = lookup or lookup_for(settings)
    deadline = timedelta(hours=settings.reconcile_deadline_hours)
    report = ReconcileReport()
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            f"""
            with mine as (
                select outbox_id from ops.outbox where status = 'unknown'
                for update skip locked
            ), seen as (
                select o.outbox_id, min(e.occurred_at) as first_at,
                       (array_agg(e.event_type order by e.occurred_at, e.event_id))[1] as first,
                       (array_agg(e.provider_message_id order by e.occurred_at, e.event_id)
                        filter (where e.provider_message_id is not null))[1] as message_id
                from mine join ops.outbox o on o.outbox_id = mine.outbox_id
                join ops.message_events e
                  on e.outbox_id = o.outbox_id and e.provider = {_PROVIDER}
                group by o.outbox_id
            )
            update ops.outbox o
            set status = 'sent', sent_at = coalesce(o.sent_at, seen.first_at),
                provider_id = coalesce(o.provider_id, seen.message_id),
                last_error = format(%(sent)s, seen.first), lease_until = null, updated_at = now()
            from seen
            where o.outbox_id = seen.outbox_id and o.status = 'unknown'
            returning o.outbox_id
            """,
            {"sent": RESOLVED_SENT.replace("{}", "%s")},
        ).fetchall()
        report.sent = len(rows)
        if lookup is not None:
            ask_twilio(conn, lookup, report)
        # Expired, yet handed over: handed_at is kept (or, for a row from before it was
        # stamped, set to when its batch was handed over), so the row keeps its key.
        report.expired = conn.execute(
            """
            update ops.outbox o
            set status = 'expired', last_error = %(why)s, lease_until = null, updated_at = now(),
                handed_at = coalesce(o.handed_at, (select b.sending_at from ops.dispatch_batches b
                                                   where b.batch_id = o.batch_id), o.updated_at)
            where o.outbox_id in (select outbox_id from ops.outbox
                                  where status = 'unknown' and updated_at + %(deadline)s <= %(now)s
                                  for update skip locked)
            """,
            {"why": RESOLVED_EXPIRED.format(settings.reconcile_deadline_hours),
             "deadline": deadline, "now": now},
        ).rowcount
        for oid, channel, since, error in conn.execute(
            "select outbox_id, channel, updated_at, last_error from ops.outbox "
            "where status = 'unknown' order by updated_at, outbox_id"
        ):
            report.unresolved.append(Unresolved(oid, channel, since, since + deadline, error))
        report.expired_but_seen = [r[0] for r in conn.execute(
            f"""
            select distinct o.outbox_id from ops.outbox o
            join ops.message_events e on e.outbox_id = o.outbox_id and e.provider = {_PROVIDER}
            where o.status = 'expired' and o.last_error like 'reconciled:%%'
            order by o.outbox_id
            """
        )]
    return report
