"""What a transport is given and what it must answer."""

from __future__ import annotations

import enum
from concurrent.futures import Future
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
    # not sent: the claim lapsed before the request (hand_over refused it); its holder decides
    NOT_HANDED = "not_handed"


@dataclass(frozen=True)
class SendResult:
    outcome: SendOutcome
    provider_id: str | None = None
    error: str | None = None
    retry_after: float | None = None  # seconds the provider asked us to wait (429)


class HandOver(Protocol):
    """Asked immediately before each provider request, with the outbox ids it carries: which
    may go (still claimed by the batch, now stamped handed over). The others are not sent."""

    def submit(self, outbox_ids: list[int]) -> Future[set[int]]: ...

    def __call__(self, outbox_ids: list[int]) -> set[int]: ...

    def release(self, outbox_ids: list[int]) -> None:
        """Their request certainly did not deliver them (refused, failed before the provider
        took it): not handed over after all. Does not wait."""
        ...


# what a request's outcome says: the provider certainly did not take the message
NOT_DELIVERED = frozenset({SendOutcome.RETRY, SendOutcome.FAILED})

NOT_HANDED = SendResult(SendOutcome.NOT_HANDED, error="claim lost before the request")


class Transport(Protocol):
    name: str

    def send_batch(self, messages: list[OutboundMessage], pacer: Pacer | None = None,
                   handover: HandOver | None = None) -> list[SendResult]:
        """Send each message once; results in the same order.

        With ``pacer`` (one channel's messages) each send starts when the shared rate allows.
        With ``handover``, each provider request first asks it which of its messages may go;
        the others are answered ``NOT_HANDED`` and not sent.
        """
        ...

    def close(self) -> None: ...
