"""Asking Twilio what it sent: its Messages list, by recipient and date sent.

Reconciliation asks it about SMS rows whose send outcome is ``unknown`` and that no status
callback named: a message Twilio lists to that number, with that body, sent since the row was
handed over, is the row's (Twilio's list carries no outbox id, so number, text and time are what
can match). Only the ``standin`` and ``live`` transports ask; the sandbox has no provider.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

import requests
from twilio.base.exceptions import TwilioException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from lifecycle.logs import get_logger, mask_library_loggers
from lifecycle.settings import Settings

TWILIO_BASE = "https://api.twilio.com"
# The SDK logs every request at INFO, the To number included: keep it quiet.
_SDK_LOGGER = get_logger("lifecycle.twilio_lookup_sdk")
_SDK_LOGGER.setLevel(logging.WARNING)
# What asking can fail with: the row then stays unknown until the next run or its deadline.
LOOKUP_ERRORS = (TwilioException, requests.RequestException)


@dataclass(frozen=True)
class Listed:
    """One message Twilio lists."""

    sid: str
    to: str
    body: str
    status: str | None
    date_sent: datetime | None


class _BaseUrlHttpClient(TwilioHttpClient):
    """Twilio's HTTP client with the API base rewritten (the stand-in server), no retries."""

    def __init__(self, base_url: str | None, timeout: float):
        super().__init__(pool_connections=True, logger=_SDK_LOGGER, timeout=timeout)
        self._base = base_url.rstrip("/") if base_url else None

    def request(self, method, url, params=None, data=None, headers=None, auth=None,
                timeout=None, allow_redirects=False):  # noqa: ANN001
        if self._base and url.startswith(TWILIO_BASE):
            url = self._base + url[len(TWILIO_BASE):]
        return super().request(method, url, params=params, data=data, headers=headers,
                               auth=auth, timeout=timeout, allow_redirects=allow_redirects)


class TwilioLookup:
    """``messages.list(to=..., date_sent_after=...)`` through the real twilio SDK."""

    def __init__(self, account_sid: str, auth_token: str, *, base_url: str | None = None,
                 timeout: float = 10.0):
        self._client = Client(account_sid, auth_token,
                              http_client=_BaseUrlHttpClient(base_url, timeout))

    def sent_to(self, to: str, since: datetime) -> list[Listed]:
        """Messages Twilio lists to ``to`` sent since ``since`` (Twilio filters by date sent;
        a message still queued there has none yet and is not listed)."""
        out = []
        for m in self._client.messages.list(to=to, date_sent_after=since.astimezone(UTC)):
            out.append(Listed(m.sid, m.to, m.body, m.status, m.date_sent))
        return out


def lookup_for(settings: Settings) -> TwilioLookup | None:
    """The lookup the transport allows: the stand-in's or Twilio's; None for the sandbox (and
    for ``live`` without Twilio credentials, which cannot send either)."""
    if settings.transport == "sandbox":
        return None
    if settings.transport == "live":
        if not (settings.twilio_account_sid and settings.twilio_auth_token):
            return None
        base = None
    else:
        base = settings.standin_url
    mask_library_loggers()
    return TwilioLookup(settings.twilio_account_sid or "AC" + "0" * 32,
                        settings.twilio_auth_token or "standin", base_url=base,
                        timeout=settings.provider_timeout_s)
