"""SMS through the real ``twilio`` SDK (the live API, or the stand-in server by base URL).

Twilio's Messages create takes no idempotency key, so every outcome is classified by whether the
request could have been processed: refused before it left (connection refused, 429, 503) may be
retried; anything after it left without a clear answer (timeout, connection cut, 500) is
``UNKNOWN`` and is never re-sent blindly.
"""

from __future__ import annotations

import requests
from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from lifecycle.transports.base import OutboundMessage, SendOutcome, SendResult

TWILIO_BASE = "https://api.twilio.com"
# 429: rate limited, never processed. 503: not accepted. Other 5xx may have been processed.
_RETRYABLE_STATUS = {429, 503}


class _BaseUrlHttpClient(TwilioHttpClient):
    """Twilio's own HTTP client, with the API base rewritten (stand-in server) and no retries."""

    def __init__(self, base_url: str | None, timeout: float):
        super().__init__(timeout=timeout, max_retries=0)
        self._base = base_url.rstrip("/") if base_url else None

    def request(self, method, url, *args, **kwargs):  # noqa: ANN001 - the SDK's signature
        if self._base and url.startswith(TWILIO_BASE):
            url = self._base + url[len(TWILIO_BASE):]
        return super().request(method, url, *args, **kwargs)


def classify_request_error(exc: requests.RequestException) -> SendOutcome:
    """Whether a failed HTTP call could have reached the provider."""
    if isinstance(exc, requests.ConnectTimeout):
        return SendOutcome.RETRY
    if isinstance(exc, requests.ConnectionError):
        reason = exc.args[0] if exc.args else None
        text = repr(reason)
        # urllib3 NewConnectionError: refused / unreachable before any byte was sent
        if "NewConnectionError" in text or "Connection refused" in text:
            return SendOutcome.RETRY
        return SendOutcome.UNKNOWN
    return SendOutcome.UNKNOWN  # read timeouts and the rest: the request left


class TwilioTransport:
    name = "twilio"

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        *,
        messaging_service_sid: str | None = None,
        from_number: str | None = None,
        status_callback_url: str | None = None,
        base_url: str | None = None,
        timeout: float = 10.0,
        validity_period_s: int | None = None,
    ):
        if not (messaging_service_sid or from_number):
            raise ValueError("Twilio needs a Messaging Service SID or a From number")
        self._client = Client(account_sid, auth_token,
                              http_client=_BaseUrlHttpClient(base_url, timeout))
        self._service = messaging_service_sid
        self._from = from_number
        self._callback = status_callback_url
        self._validity = validity_period_s

    def _send_one(self, m: OutboundMessage) -> SendResult:
        kwargs: dict = {"to": m.to_address, "body": m.body}
        if self._service:
            kwargs["messaging_service_sid"] = self._service
        else:
            kwargs["from_"] = self._from
        if self._callback:
            # The outbox id travels with the message: status callbacks reconcile by it.
            sep = "&" if "?" in self._callback else "?"
            kwargs["status_callback"] = f"{self._callback}{sep}outbox_id={m.outbox_id}"
        if self._validity:
            kwargs["validity_period"] = self._validity
        try:
            msg = self._client.messages.create(**kwargs)
        except TwilioRestException as exc:
            if exc.status in _RETRYABLE_STATUS:
                return SendResult(SendOutcome.RETRY, error=f"twilio {exc.status}",
                                  retry_after=1.0 if exc.status == 429 else None)
            if 400 <= exc.status < 500:
                return SendResult(SendOutcome.FAILED, error=f"twilio {exc.status} {exc.code}")
            return SendResult(SendOutcome.UNKNOWN, error=f"twilio {exc.status}")
        except requests.RequestException as exc:
            return SendResult(classify_request_error(exc), error=type(exc).__name__)
        return SendResult(SendOutcome.SENT, provider_id=msg.sid)

    def send_batch(self, messages: list[OutboundMessage]) -> list[SendResult]:
        return [self._send_one(m) for m in messages]

    def close(self) -> None:
        session = self._client.http_client.session
        if session is not None:
            session.close()
