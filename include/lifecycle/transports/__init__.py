"""Transports behind one interface (DESIGN.md #5): sandbox, standin, live."""

from __future__ import annotations

from lifecycle.transports.base import OutboundMessage, SendOutcome, SendResult, Transport


def get_transport(name: str, url: str) -> Transport:
    """The transport called ``name``; ``url`` is the warehouse (the sandbox records there)."""
    if name == "sandbox":
        from lifecycle.transports.sandbox import SandboxTransport

        return SandboxTransport(url)
    raise ValueError(
        f"transport '{name}' is not available yet; valid: sandbox "
        "(standin and live come with the dispatch issue)"
    )


__all__ = ["OutboundMessage", "SendOutcome", "SendResult", "Transport", "get_transport"]
