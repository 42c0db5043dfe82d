"""Dead contacts: phones and email addresses no message reaches (``ops.dead_contacts``).

One table for every kind of evidence, so planning asks one question whatever found the
address dead: a provider event (hard bounce, undelivered SMS, carrier failure) or a call
outcome (wrong number). The address is the person's inbox, normalized as
``lifecycle.planning.plan.contact_key`` compares them, so a number stored in a national format
on another record is the same dead number.
"""

from __future__ import annotations

from datetime import datetime

import psycopg

PHONE = "phone"
EMAIL = "email"
KINDS = (PHONE, EMAIL)
DEAD_EVIDENCE = ("hard_bounce", "undelivered", "wrong_number", "carrier_failure")
# the contact kind each channel reaches the customer through
CHANNEL_KIND = {"sms": PHONE, "call": PHONE, "email": EMAIL}


def normalize(kind: str, address: str) -> str:
    """The address as ops.dead_contacts keys it: a phone's digits with its leading +, an
    email without case or surrounding spaces."""
    address = (address or "").strip()
    if kind == PHONE:
        return "".join(ch for ch in address if ch.isdigit() or ch == "+")
    if kind == EMAIL:
        return address.lower()
    raise ValueError(f"contact kind {kind!r}: expected one of {', '.join(KINDS)}")


def mark_dead(
    conn: psycopg.Connection,
    kind: str,
    address: str,
    evidence: str,
    observed_at: datetime,
    source: str,
) -> bool:
    """Record ``address`` as dead; True when it was not already. The first evidence is kept
    (a second bounce of a dead address changes nothing). Runs in the caller's transaction."""
    if evidence not in DEAD_EVIDENCE:
        raise ValueError(f"evidence {evidence!r}: expected one of {', '.join(DEAD_EVIDENCE)}")
    key = normalize(kind, address)
    if not key:
        raise ValueError("an empty address cannot be marked dead")
    cur = conn.execute(
        "insert into ops.dead_contacts (kind, address, evidence, observed_at, source) "
        "values (%s, %s, %s, %s, %s) on conflict (kind, address) do nothing",
        (kind, key, evidence, observed_at, source),
    )
    return cur.rowcount == 1


def dead_addresses(conn: psycopg.Connection, kind: str, addresses: list[str]) -> dict[str, str]:
    """normalized address -> evidence, for those of ``addresses`` that are dead."""
    keys = sorted({normalize(kind, a) for a in addresses if a})
    if not keys:
        return {}
    rows = conn.execute(
        "select address, evidence from ops.dead_contacts where kind = %s and address = any(%s)",
        (kind, keys),
    )
    return dict(rows.fetchall())
