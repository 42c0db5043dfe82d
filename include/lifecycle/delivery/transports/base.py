"""What a transport is given and what it must answer."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple, Protocol

if TYPE_CHECKING:
    from lifecycle.delivery.throttle import Pacer


class OutboundMessage(NamedTuple):
    """One claimed outbox row, as a transport sends it (a tuple: cheap to make from a row)."""

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

    def send_batch(self, messages: list[OutboundMessage],
                   pacer: Pacer | None = None) -> list[SendResult]:
        """Send each message once; results in the same order.

        With ``pacer`` (one channel's messages) each send starts when the shared rate allows.
        """
        ...

    def close(self) -> None: ...
