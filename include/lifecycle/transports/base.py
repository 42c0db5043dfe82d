"""What a transport is given and what it must answer."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class OutboundMessage:
    outbox_id: int
    message_key: str
    customer_id: str
    phase: str
    step: int
    channel: str
    to_address: str
    subject: str | None
    body: str


class SendOutcome(enum.Enum):
    SENT = "sent"  # the provider accepted it
    RETRY = "retry"  # certainly not sent (refused, 429, 5xx before acceptance): may retry
    FAILED = "failed"  # certainly not sent and never will be (invalid number, rejected)
    UNKNOWN = "unknown"  # may have been sent: never re-sent blindly, reconciliation decides


@dataclass(frozen=True)
class SendResult:
    outcome: SendOutcome
    provider_id: str | None = None
    error: str | None = None
    retry_after: float | None = None  # seconds the provider asked us to wait (429)


class Transport(Protocol):
    name: str

    def send_batch(self, messages: list[OutboundMessage]) -> list[SendResult]:
        """Send each message once; results in the same order."""
        ...

    def close(self) -> None: ...
