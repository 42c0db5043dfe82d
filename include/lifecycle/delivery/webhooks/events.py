"""What a verified webhook delivers, as one record per event, and how it is written.

Every provider module turns a verified request into ``Event`` records; ``write_events`` stores
them in ``ops.message_events`` and applies the suppression change each new event implies, and
marks the address dead (``ops.dead_contacts``, lifecycle.contacts) when the event proves it, all
in one transaction. A retried delivery conflicts on ``dedupe_key`` (or SendGrid's ``sg_event_id``)
and changes nothing: the suppression change is applied only for rows actually inserted.

An SMS opt-out is kept twice: for every customer whose phone is the sender's
(``ops.suppressions``) and for the number itself (``ops.address_suppressions``, E.164), so a
STOP from a number no customer has yet still holds when a customer with it is loaded later.
Phones compare in E.164: the sender's with ``normalise_phone`` (phonenumbers, the club's
``default_region``), the customers' as dbt's ``stg_club__customers`` normalised them, which
agrees with it (tests/reliability/test_phone_parity.py).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from datetime import datetime

import phonenumbers
import psycopg
from psycopg import sql

from lifecycle.contacts import CHANNEL_KIND, mark_dead
from lifecycle.settings import Settings, get_settings

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
    # evidence the address is dead (lifecycle.contacts.DEAD_EVIDENCE): marked in ops.dead_contacts
    dead_evidence: str | None = None


@dataclass
class WriteResult:
    received: int = 0
    inserted: int = 0
    duplicates: int = 0
    suppressed: int = 0  # customer-channel suppressions added
    dead: int = 0  # addresses newly marked dead
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
            "dead": self.dead,
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


# The number in what people store: from the first + or digit to the last digit (as
# stg_club__customers cuts it: "tel: 067…", "+380… (mob)", "067….").
_NUMBER = re.compile(r"[+0-9].*[0-9]", re.S)
STAGED_CUSTOMERS = "stg_club__customers"


def normalise_phone(raw: str | None, region: str) -> str | None:
    """A phone as E.164 (``+380671234567``), national numbers in ``region``; None if it is none.

    The one definition of a normalised phone on the Python side; dbt's stg_club__customers
    computes the same in SQL for the formats clubs store (national with trunk 0, 00 or +
    international, "+44 (0)20", separators, text around the number).
    """
    if not raw:
        return None
    found = _NUMBER.search(raw)
    try:
        number = phonenumbers.parse(found.group(0) if found else raw, region)
    except phonenumbers.NumberParseException:
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def suppression_address(e: Event, region: str) -> str | None:
    """The address an event's suppression change is kept for: E.164 phone, lower-case email."""
    if not e.address:
        return None
    if e.channel == "email":
        return e.address.strip().lower()
    return normalise_phone(e.address, region) or e.address


def _staged_customers(conn: psycopg.Connection, schema: str) -> sql.Composable | None:
    name = sql.Identifier(schema, STAGED_CUSTOMERS)
    exists = conn.execute("select to_regclass(%s)", (name.as_string(conn),)).fetchone()[0]
    return name if exists else None


def customers_for(
    conn: psycopg.Connection, e: Event, settings: Settings | None = None
) -> list[str]:
    """Customers an event's suppression change applies to.

    The customer of the outbox row it names, and every customer with the same address (in the
    outbox, where it was sent to, or among the customers): whoever owns the address said so.
    A phone matches in E.164, however the club stored it (dbt's staged phone); raw.customers
    is read too (digits alike), for customers loaded since the last build.
    """
    settings = settings or get_settings()
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
            phone = normalise_phone(e.address, settings.default_region)
            digits = _digits(phone or e.address)
            if len(digits) < 6:  # not a phone number: would match too much
                return sorted(ids)
            query = sql.SQL(
                "select customer_id from ops.outbox where channel = 'sms' "
                "and lower(to_address) = any(%(a)s) "
                "union select customer_id from raw.customers "
                "where regexp_replace(phone, '[^0-9]', '', 'g') = %(d)s"
            )
            staged = _staged_customers(conn, settings.dbt_schema)
            if staged is not None:
                query += sql.SQL(" union select customer_id from {} where phone = %(p)s").format(
                    staged
                )
            addresses = sorted({e.address.lower(), (phone or e.address).lower()})
            rows = conn.execute(query, {"a": addresses, "d": digits, "p": phone})
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


def _change_address_suppression(conn: psycopg.Connection, e: Event, region: str) -> None:
    """An SMS opt-out suppresses the sender's number, matched to a customer or not; START
    lifts it. Other channels and reasons are kept per customer only."""
    address = suppression_address(e, region)
    if e.channel != "sms" or address is None:
        return
    if e.suppression == OPT_IN:
        conn.execute(
            "delete from ops.address_suppressions where channel = %s and address = %s "
            "and reason = 'opted_out'",
            (e.channel, address),
        )
    elif e.suppression == OPTED_OUT:
        conn.execute(
            "insert into ops.address_suppressions (channel, address, reason, source) "
            "values (%s, %s, %s, %s) on conflict (channel, address) do nothing",
            (e.channel, address, e.suppression, e.provider),
        )


def write_events(url: str, events: list[Event], *, ignored: int = 0,
                 settings: Settings | None = None) -> WriteResult:
    """Store the events, their suppression changes and the dead addresses they prove in one
    transaction (idempotent)."""
    settings = settings or get_settings()
    result = WriteResult(received=len(events) + ignored, ignored=ignored)
    with psycopg.connect(url) as conn:
        for e in events:
            row = conn.execute(_INSERT, asdict(e)).fetchone()
            if row is None:
                result.duplicates += 1
                continue
            result.inserted += 1
            result.by_type[e.event_type] = result.by_type.get(e.event_type, 0) + 1
            address = suppression_address(e, settings.default_region)
            if e.dead_evidence is not None and address:
                result.dead += mark_dead(conn, CHANNEL_KIND[e.channel], address,
                                         e.dead_evidence, e.occurred_at, e.provider)
            if e.suppression is None:
                continue
            customers = customers_for(conn, e, settings)
            _change_address_suppression(conn, e, settings.default_region)
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
