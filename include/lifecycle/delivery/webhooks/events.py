"""What a verified webhook delivers, as one record per event, and how it is written.

Every provider module turns a verified request into ``Event`` records; ``write_events`` stores
them in ``ops.message_events`` and applies the suppression change each new event implies, all in
one transaction. A retried delivery conflicts on ``dedupe_key`` (or SendGrid's ``sg_event_id``)
and changes nothing: the suppression change is applied only for rows actually inserted.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from datetime import datetime

import psycopg

# The suppression reasons of ops.suppressions an event can set, and the opt-in that lifts one.
OPTED_OUT = "opted_out"
HARD_BOUNCE = "hard_bounce"
SPAM_COMPLAINT = "spam_complaint"
OPT_IN = "opt_in"

_TEXT_LIMIT = 1000
_ADDRESS_LIMIT = 320


class MalformedBody(ValueError):
    """The body is not what the provider sends: rejected with 400, nothing written."""


@dataclass(frozen=True)
class Event:
    provider: str  # sendgrid | twilio
    channel: str  # email | sms
    event_type: str
    occurred_at: datetime
    dedupe_key: str
    outbox_id: int | None = None
    provider_message_id: str | None = None
    provider_event_id: str | None = None
    address: str | None = None
    reason: str | None = None
    suppression: str | None = None  # opted_out | hard_bounce | spam_complaint | opt_in


@dataclass
class WriteResult:
    received: int = 0
    inserted: int = 0
    duplicates: int = 0
    suppressed: int = 0  # customer-channel suppressions added
    opted_in: int = 0  # customer-channel opt-outs lifted
    ignored: int = 0  # events of a kind we do not record (the provider's newer types, etc.)
    by_type: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {
            "received": self.received,
            "inserted": self.inserted,
            "duplicates": self.duplicates,
            "suppressed": self.suppressed,
            "opted_in": self.opted_in,
            "ignored": self.ignored,
        }


def clip(value: object, limit: int = _TEXT_LIMIT) -> str | None:
    """A provider's string field, bounded (a hostile body cannot bloat the table)."""
    if value is None or isinstance(value, (dict, list)):
        return None
    # JSON may escape a lone surrogate or a NUL: neither can be stored as PostgreSQL text
    text = str(value).replace("\x00", "").encode("utf-8", "replace").decode("utf-8")
    return text[:limit] if text else None


def clip_address(value: object) -> str | None:
    text = clip(value, _ADDRESS_LIMIT)
    return text.strip() if text else None


def parse_outbox_id(value: object) -> int | None:
    """An outbox id as the provider echoes it back (string or number); None if it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        n = value
    elif isinstance(value, str) and value.strip().isdigit():
        n = int(value.strip())
    else:
        return None
    return n if 0 < n < 2**63 else None


def _digits(phone: str) -> str:
    return re.sub(r"\D", "", phone)


def customers_for(conn: psycopg.Connection, e: Event) -> list[str]:
    """Customers an event's suppression change applies to.

    The customer of the outbox row it names, and every customer with the same address (in the
    outbox, where it was sent to, or in raw.customers): whoever owns the address said so.
    """
    ids: set[str] = set()
    if e.outbox_id is not None:
        ids.update(r[0] for r in conn.execute(
            "select customer_id from ops.outbox where outbox_id = %s and channel = %s",
            (e.outbox_id, e.channel),
        ))
    if e.address:
        if e.channel == "email":
            addr = e.address.lower()
            rows = conn.execute(
                "select customer_id from ops.outbox where channel = 'email' "
                "and lower(to_address) = %(a)s "
                "union select customer_id from raw.customers where lower(trim(email)) = %(a)s",
                {"a": addr},
            )
        else:
            digits = _digits(e.address)
            if len(digits) < 6:  # not a phone number: would match too much
                return sorted(ids)
            rows = conn.execute(
                "select customer_id from ops.outbox where channel = 'sms' "
                "and lower(to_address) = lower(%(a)s) "
                "union select customer_id from raw.customers "
                "where regexp_replace(phone, '[^0-9]', '', 'g') = %(d)s",
                {"a": e.address, "d": digits},
            )
        ids.update(r[0] for r in rows)
    return sorted(ids)


_INSERT = """
insert into ops.message_events
    (provider, channel, event_type, outbox_id, provider_message_id, provider_event_id,
     address, reason, suppression, occurred_at, dedupe_key)
values (%(provider)s, %(channel)s, %(event_type)s, %(outbox_id)s, %(provider_message_id)s,
        %(provider_event_id)s, %(address)s, %(reason)s, %(suppression)s, %(occurred_at)s,
        %(dedupe_key)s)
on conflict do nothing
returning event_id
"""


def write_events(url: str, events: list[Event], *, ignored: int = 0) -> WriteResult:
    """Store the events and their suppression changes in one transaction (idempotent)."""
    result = WriteResult(received=len(events) + ignored, ignored=ignored)
    with psycopg.connect(url) as conn:
        for e in events:
            row = conn.execute(_INSERT, asdict(e)).fetchone()
            if row is None:
                result.duplicates += 1
                continue
            result.inserted += 1
            result.by_type[e.event_type] = result.by_type.get(e.event_type, 0) + 1
            if e.suppression is None:
                continue
            customers = customers_for(conn, e)
            if e.suppression == OPT_IN:
                # Only an opt-out is lifted by START: a bounce or a manual block stays.
                result.opted_in += conn.execute(
                    "delete from ops.suppressions where customer_id = any(%s) and channel = %s "
                    "and reason = 'opted_out'",
                    (customers, e.channel),
                ).rowcount
            else:
                result.suppressed += conn.execute(
                    "insert into ops.suppressions (customer_id, channel, reason, source) "
                    "select c, %s, %s, %s from unnest(%s::text[]) c "
                    "on conflict (customer_id, channel) do nothing",
                    (e.channel, e.suppression, e.provider, customers),
                ).rowcount
            conn.execute(
                "update ops.message_events set customers_affected = %s where event_id = %s",
                (len(customers), row[0]),
            )
    return result
