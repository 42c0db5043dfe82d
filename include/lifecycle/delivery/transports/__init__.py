"""Transports behind one interface (docs/architecture.md #5): sandbox, standin, live."""

from __future__ import annotations

from lifecycle.delivery.transports.base import (
    HandOver,
    OutboundMessage,
    SendOutcome,
    SendResult,
    Transport,
)
from lifecycle.logs import mask_library_loggers
from lifecycle.settings import Settings, get_settings


class ChannelRouter:
    """One transport per channel behind the Transport interface."""

    def __init__(self, name: str, by_channel: dict[str, Transport]):
        self.name = name
        self._by_channel = by_channel

    def send_batch(self, messages: list[OutboundMessage], pacer=None,
                   handover: HandOver | None = None) -> list[SendResult]:
        channels = (messages.channels() if hasattr(messages, "channels")  # a claimed Batch
                    else {m.channel for m in messages})
        if len(channels) == 1 and (channel := channels.pop()) in self._by_channel:
            # one channel (a drain's batch): handed on as it is, not copied into a list of
            # message objects that would sit in the collector's oldest generation
            return self._by_channel[channel].send_batch(messages, pacer=pacer,
                                                        handover=handover)
        results: list[SendResult | None] = [None] * len(messages)
        for channel, transport in self._by_channel.items():
            idxs = [i for i, m in enumerate(messages) if m.channel == channel]
            if idxs:
                sent = transport.send_batch([messages[i] for i in idxs], pacer=pacer,
                                            handover=handover)
                for i, r in zip(idxs, sent, strict=True):
                    results[i] = r
        missing = {messages[i].channel for i, r in enumerate(results) if r is None}
        if missing:
            raise ValueError(f"transport '{self.name}' has no channel {sorted(missing)}")
        return results  # type: ignore[return-value]

    def close(self) -> None:
        for t in self._by_channel.values():
            t.close()


def _required(settings: Settings, *names: str) -> None:
    missing = [n for n in names if not getattr(settings, n)]
    if missing:
        env = ", ".join("LIFECYCLE_" + n.upper() for n in missing)
        raise ValueError(f"transport '{settings.transport}' needs {env}")


def get_transport(name: str, url: str, settings: Settings | None = None) -> Transport:
    """The transport called ``name``; ``url`` is the warehouse (the sandbox records there)."""
    settings = settings or get_settings()
    if name == "sandbox":
        from lifecycle.delivery.transports.sandbox import SandboxTransport

        return SandboxTransport(url)
    if name not in ("standin", "live"):
        raise ValueError(f"unknown transport '{name}'; valid: sandbox, standin, live")
    from lifecycle.delivery.transports.sendgrid import SendGridTransport
    from lifecycle.delivery.transports.twilio import TwilioTransport

    mask_library_loggers()  # the SDKs log requests: never a number or an address in clear

    base = settings.standin_url if name == "standin" else None
    if name == "live":
        # The status callback carries the outbox id back: reconciliation depends on it.
        _required(settings, "twilio_account_sid", "twilio_auth_token", "sendgrid_api_key",
                  "sendgrid_from", "twilio_status_callback_url")
    sms = TwilioTransport(
        settings.twilio_account_sid or "AC" + "0" * 32,
        settings.twilio_auth_token or "standin",
        messaging_service_sid=settings.twilio_messaging_service_sid
        or (None if settings.twilio_from else "MG" + "0" * 32),
        from_number=settings.twilio_from,
        status_callback_url=settings.twilio_status_callback_url
        or f"{settings.standin_url}/_standin/status",
        base_url=base,
        timeout=settings.provider_timeout_s,
        concurrency=settings.twilio_concurrency,
    )
    email = SendGridTransport(settings.sendgrid_api_key or "SG.standin",
                              settings.sendgrid_from or "club@example.com",
                              base_url=base, timeout=settings.provider_timeout_s,
                              concurrency=settings.sendgrid_concurrency)
    return ChannelRouter(name, {"sms": sms, "email": email})


__all__ = ["ChannelRouter", "OutboundMessage", "SendOutcome", "SendResult", "Transport",
           "get_transport"]
