"""Helpers for the webhook tests: keys made here, signatures made here, a real uvicorn server."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import uvicorn
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from lifecycle.delivery.webhooks import standalone_app
from lifecycle.settings import Settings

TWILIO_TOKEN = "test-auth-token-0123456789abcdef"


class SendGridKey:
    """An ECDSA P-256 key pair standing in for SendGrid's signing key."""

    def __init__(self) -> None:
        self._private = ec.generate_private_key(ec.SECP256R1())
        der = self._private.public_key().public_bytes(Encoding.DER,
                                                      PublicFormat.SubjectPublicKeyInfo)
        self.public_b64 = base64.b64encode(der).decode()

    def headers(self, body: bytes, timestamp: int | None = None) -> dict[str, str]:
        ts = str(int(time.time()) if timestamp is None else timestamp)
        sig = self._private.sign(ts.encode() + body, ec.ECDSA(hashes.SHA256()))
        return {
            "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(sig).decode(),
            "X-Twilio-Email-Event-Webhook-Timestamp": ts,
            "Content-Type": "application/json",
        }


def twilio_signature(url: str, params: dict[str, str], token: str = TWILIO_TOKEN) -> str:
    """Twilio's scheme, written out here: HMAC-SHA1 over the URL and the sorted key+value pairs."""
    payload = url + "".join(k + params[k] for k in sorted(params))
    digest = hmac.new(token.encode(), payload.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def webhook_settings(key: SendGridKey, **kw: object) -> Settings:
    return Settings(sendgrid_webhook_public_key=key.public_b64, twilio_auth_token=TWILIO_TOKEN,
                    **kw)


@contextmanager
def serving(url: str, settings: Settings) -> Iterator[str]:
    """The standalone receiver on a free port; yields its base URL (…/lifecycle)."""
    config = uvicorn.Config(standalone_app(settings, url), host="127.0.0.1", port=0,
                            log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/lifecycle"
    finally:
        server.should_exit = True
        thread.join(10)


def sendgrid_body(events: list[dict]) -> bytes:
    return json.dumps(events).encode()


def table(url: str, sql: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchall()


def events_and_suppressions(url: str) -> tuple[list[tuple], list[tuple]]:
    """Everything the receiver writes, comparable across requests."""
    return (
        table(url, "select provider, channel, event_type, outbox_id, provider_message_id, "
                   "provider_event_id, address, reason, suppression, occurred_at, dedupe_key "
                   "from ops.message_events order by event_id"),
        table(url, "select customer_id, channel, reason, source from ops.suppressions "
                   "order by 1, 2"),
    )
