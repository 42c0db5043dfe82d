"""Resolve ``unknown`` outbox rows from provider events (DESIGN.md #4: unknown -> sent|expired).

A send whose outcome was ambiguous (a timeout, a cut connection, a lapsed lease) is never re-sent
blindly. The provider's own events decide: any event for the row's outbox id from the row's
provider (SendGrid for email, Twilio for SMS) means the provider saw the message, so it is
``sent``. With no event ``reconcile_deadline_hours`` after the row turned unknown, it was not
sent: ``expired``, which releases its step for a later day. Everything else is reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import psycopg

from lifecycle.settings import Settings, get_settings

RESOLVED_SENT = "reconciled: the provider reported it ({})"
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
    sent: int = 0
    expired: int = 0
    unresolved: list[Unresolved] = field(default_factory=list)
    # Expired rows a provider event later showed were sent: counted, never re-sent or changed
    # (the step's key may already be planned again); for an operator to look at.
    expired_but_seen: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "expired": self.expired,
            "unresolved": [u.as_dict() for u in self.unresolved],
            "expired_but_seen": self.expired_but_seen,
        }


def reconcile(url: str, *, now: datetime, settings: Settings | None = None) -> ReconcileReport:
    """Resolve unknown rows from ops.message_events; report those still open (one transaction)."""
    settings = settings or get_settings()
    deadline = timedelta(hours=settings.reconcile_deadline_hours)
    report = ReconcileReport()
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            f"""
            with seen as (
                select o.outbox_id, min(e.occurred_at) as first_at,
                       (array_agg(e.event_type order by e.occurred_at, e.event_id))[1] as first,
                       (array_agg(e.provider_message_id order by e.occurred_at, e.event_id)
                        filter (where e.provider_message_id is not null))[1] as message_id
                from ops.outbox o
                join ops.message_events e
                  on e.outbox_id = o.outbox_id and e.provider = {_PROVIDER}
                where o.status = 'unknown'
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
        report.expired = conn.execute(
            """
            update ops.outbox o
            set status = 'expired', last_error = %(why)s, lease_until = null, updated_at = now()
            where o.status = 'unknown' and o.updated_at + %(deadline)s <= %(now)s
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
