"""The default transport: records each message in ``ops.sandbox_messages`` instead of sending."""

from __future__ import annotations

import psycopg

from lifecycle.transports.base import OutboundMessage, SendOutcome, SendResult


class SandboxTransport:
    name = "sandbox"

    def __init__(self, url: str):
        self._conn = psycopg.connect(url, autocommit=True)

    def send_batch(self, messages: list[OutboundMessage]) -> list[SendResult]:
        if not messages:
            return []
        with self._conn.cursor() as cur:
            # The outbox id is the primary key: a message is recorded once, however often asked.
            cur.executemany(
                "insert into ops.sandbox_messages "
                "(outbox_id, channel, to_address, subject, body, provider_id) "
                "values (%s, %s, %s, %s, %s, %s) on conflict (outbox_id) do nothing",
                [
                    (m.outbox_id, m.channel, m.to_address, m.subject, m.body, _provider_id(m))
                    for m in messages
                ],
            )
        return [SendResult(SendOutcome.SENT, _provider_id(m)) for m in messages]

    def close(self) -> None:
        self._conn.close()


def _provider_id(m: OutboundMessage) -> str:
    return f"sandbox-{m.outbox_id}"
