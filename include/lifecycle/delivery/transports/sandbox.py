"""The default transport: records each message in ``ops.sandbox_messages`` instead of sending."""

from __future__ import annotations

import psycopg

from lifecycle.delivery.transports.base import (
    NOT_HANDED,
    HandOver,
    OutboundMessage,
    SendOutcome,
    SendResult,
)


class SandboxTransport:
    name = "sandbox"

    def __init__(self, url: str):
        self._conn = psycopg.connect(url, autocommit=True)

    def send_batch(self, messages: list[OutboundMessage], pacer=None,
                   handover: HandOver | None = None) -> list[SendResult]:
        """Record each message (the sandbox has no rate: ``pacer`` is not needed); the whole
        batch is one request."""
        if not messages:
            return []
        if handover is not None:
            allowed = handover([m.outbox_id for m in messages])
            results = [None] * len(messages)
            kept = [i for i, m in enumerate(messages) if m.outbox_id in allowed]
            for i, r in zip(kept, self.send_batch([messages[i] for i in kept]), strict=True):
                results[i] = r
            return [r or NOT_HANDED for r in results]
        # The outbox id is the primary key: a message is recorded once, however often asked.
        # One statement over arrays, not one per row: the sandbox keeps up with any dispatcher.
        self._conn.execute(
            "insert into ops.sandbox_messages "
            "(outbox_id, channel, to_address, subject, body, provider_id) "
            "select * from unnest(%s::bigint[], %s::text[], %s::text[], %s::text[], %s::text[],"
            " %s::text[]) on conflict (outbox_id) do nothing",
            [
                [m.outbox_id for m in messages],
                [m.channel for m in messages],
                [m.to_address for m in messages],
                [m.subject for m in messages],
                [m.body for m in messages],
                [_provider_id(m) for m in messages],
            ],
        )
        return [SendResult(SendOutcome.SENT, _provider_id(m)) for m in messages]

    def close(self) -> None:
        self._conn.close()


def _provider_id(m: OutboundMessage) -> str:
    return f"sandbox-{m.outbox_id}"
