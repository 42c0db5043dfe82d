"""SendGrid's signed Event Webhook: ECDSA P-256 signature, batch parsing, event mapping.

SendGrid signs ``timestamp + raw body`` with its private key; the verification key (Mail
Settings > Signed Event Webhook) is a base64 DER SubjectPublicKeyInfo. A batch is a JSON array
of events; our custom arg ``outbox_id`` (set per personalization by transports/sendgrid.py)
comes back as a top-level field of each event.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from datetime import UTC, datetime

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key, load_pem_public_key

from lifecycle.delivery.webhooks.events import (
    HARD_BOUNCE,
    OPTED_OUT,
    SPAM_COMPLAINT,
    Event,
    MalformedBody,
    clip,
    clip_address,
    parse_outbox_id,
)

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"

EVENT_TYPES = frozenset({
    "processed", "delivered", "deferred", "bounce", "dropped", "spamreport", "unsubscribe",
    "group_unsubscribe", "open", "click",
})
# A drop because SendGrid already suppresses the address tells us what we must suppress too.
_DROP_REASONS = (
    ("bounced address", HARD_BOUNCE),
    ("unsubscribed address", OPTED_OUT),
    ("spam reporting address", SPAM_COMPLAINT),
)
_MAX_TIMESTAMP = 253402300799  # 9999-12-31: anything later cannot be a datetime


def load_public_key(text: str) -> ec.EllipticCurvePublicKey:
    """The verification key from its base64 DER (as SendGrid shows it) or PEM form."""
    text = text.strip()
    try:
        if "BEGIN PUBLIC KEY" in text:
            key = load_pem_public_key(text.encode())
        else:
            key = load_der_public_key(base64.b64decode("".join(text.split()), validate=True))
    except (ValueError, binascii.Error, UnsupportedAlgorithm) as exc:
        raise ValueError(
            f"LIFECYCLE_SENDGRID_WEBHOOK_PUBLIC_KEY is not a public key: {exc}"
        ) from exc
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise ValueError("LIFECYCLE_SENDGRID_WEBHOOK_PUBLIC_KEY must be an ECDSA P-256 key")
    return key


def signature_valid(key: ec.EllipticCurvePublicKey, signature: str, timestamp: str,
                    body: bytes) -> bool:
    """Whether ``signature`` (base64 DER ECDSA) signs ``timestamp`` + ``body`` with ``key``."""
    try:
        raw = base64.b64decode(signature.strip(), validate=True)
        key.verify(raw, timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True


def timestamp_fresh(timestamp: str, tolerance_s: int, now: float | None = None) -> bool:
    """Whether the signed timestamp (unix seconds) is within ``tolerance_s`` of now."""
    if not timestamp.isascii() or not timestamp.isdigit():
        return False
    now = time.time() if now is None else now
    return abs(now - int(timestamp)) <= tolerance_s


def _timestamp(value: object) -> datetime:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise MalformedBody("an event's timestamp is not a number")
    try:
        seconds = int(value)
    except (ValueError, OverflowError) as exc:
        raise MalformedBody("an event's timestamp is not a number") from exc
    if not 0 <= seconds <= _MAX_TIMESTAMP:
        raise MalformedBody("an event's timestamp is out of range")
    return datetime.fromtimestamp(seconds, UTC)


def _suppression(kind: str, item: dict) -> str | None:
    if kind in ("unsubscribe", "group_unsubscribe"):
        return OPTED_OUT
    if kind == "spamreport":
        return SPAM_COMPLAINT
    if kind == "bounce":
        # type "blocked" is a temporary refusal (soft bounce); "bounce" is the address failing.
        return None if str(item.get("type") or "bounce").lower() == "blocked" else HARD_BOUNCE
    if kind == "dropped":
        reason = str(item.get("reason") or "").lower()
        for text, suppression in _DROP_REASONS:
            if text in reason:
                return suppression
    return None


def _dead_evidence(kind: str, item: dict) -> str | None:
    """hard_bounce when the event proves the address dead: a bounce that is not a soft
    ``blocked`` one, or a drop because SendGrid holds a bounce for it; else None. A spam
    report or an unsubscribe is a live person saying no, not a dead address."""
    if _suppression(kind, item) == HARD_BOUNCE:
        return HARD_BOUNCE
    return None


def _reason(kind: str, item: dict) -> str | None:
    if kind == "click":
        return clip(item.get("url"))
    parts = [clip(item.get(k), 300) for k in ("type", "status", "reason")]
    return clip(" ".join(p for p in parts if p)) if any(parts) else None


def parse_batch(body: bytes) -> tuple[list[Event], int]:
    """(events we record, count ignored) of a batch; MalformedBody if it is not a batch."""
    try:
        items = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise MalformedBody("the body is not JSON") from exc
    if not isinstance(items, list) or not items:
        raise MalformedBody("the body is not a non-empty JSON array of events")
    events: list[Event] = []
    ignored = 0
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("event"), str):
            raise MalformedBody("an event is not an object with an 'event' name")
        occurred = _timestamp(item.get("timestamp"))
        kind = item["event"]
        if kind not in EVENT_TYPES:
            ignored += 1
            continue
        custom = item.get("custom_args")
        outbox_id = parse_outbox_id(item.get("outbox_id"))
        if outbox_id is None and isinstance(custom, dict):
            outbox_id = parse_outbox_id(custom.get("outbox_id"))
        message_id = clip(item.get("sg_message_id"), 200)
        address = clip_address(item.get("email"))
        address = address.lower() if address else None
        # Content key: a retry carries the same event, even when its sg_event_id changed.
        ref = (f"outbox:{outbox_id}" if outbox_id is not None
               else f"msg:{message_id}" if message_id else f"addr:{address}")
        events.append(Event(
            provider="sendgrid",
            channel="email",
            event_type=kind,
            occurred_at=occurred,
            dedupe_key=f"sendgrid|{ref}|{kind}|{int(occurred.timestamp())}",
            outbox_id=outbox_id,
            provider_message_id=message_id,
            provider_event_id=clip(item.get("sg_event_id"), 200),
            address=address,
            reason=_reason(kind, item),
            suppression=_suppression(kind, item),
            dead_evidence=_dead_evidence(kind, item),
        ))
    return events, ignored
