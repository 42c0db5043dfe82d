"""SMS through the real ``twilio`` SDK (the live API, or the stand-in server by base URL).

Twilio's Messages create takes no idempotency key, so every outcome is classified by whether the
request could have been processed: refused before it left (connection refused, connect timeout,
429, 503) may be retried; anything after it left without a clear answer (read timeout,
connection cut, 500) is ``UNKNOWN`` and is never re-sent blindly.

One request per SMS, so throughput comes from concurrency: the SDK's aiohttp-based async client
(``create_async``) keeps up to ``concurrency`` requests in flight on one event loop, each
started when the shared rate limit allows (``Pacer``). At 50 ms of provider latency that is
about 1,000 SMS/s per worker with 50 in flight; httpx's async client measured ~20x slower here.
"""

from __future__ import annotations

import asyncio
import logging
import time

import aiohttp
from twilio.base.exceptions import TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from lifecycle.delivery.throttle import Pacer
from lifecycle.delivery.transports.base import (
    NOT_DELIVERED,
    NOT_HANDED,
    HandOver,
    OutboundMessage,
    SendOutcome,
    SendResult,
)
from lifecycle.logs import get_logger
from lifecycle.rules.sms import segments

TWILIO_BASE = "https://api.twilio.com"
# 429: rate limited, never processed. 503: not accepted. Other 5xx may have been processed.
_RETRYABLE_STATUS = {429, 503}
# The SDK logs every request and response at INFO (the To number included): keep it quiet.
_SDK_LOGGER = get_logger("lifecycle.twilio_sdk")
_SDK_LOGGER.setLevel(logging.WARNING)


class _BaseUrlAsyncHttpClient(AsyncTwilioHttpClient):
    """Twilio's async HTTP client on our own aiohttp session: the API base rewritten (stand-in
    server), a connection pool as large as the concurrency, split connect/read timeouts, no
    retries (a retry of an ambiguous request could send twice)."""

    def __init__(self, base_url: str | None, timeout: float, concurrency: int):
        super().__init__(pool_connections=False, logger=_SDK_LOGGER, timeout=timeout)
        self._base = base_url.rstrip("/") if base_url else None
        self._limit = concurrency
        self._timeout = aiohttp.ClientTimeout(total=timeout, connect=min(timeout, 5.0))
        self.session: aiohttp.ClientSession | None = None

    async def request(self, method, url, params=None, data=None, headers=None, auth=None,
                      timeout=None, allow_redirects=False) -> Response:  # noqa: ANN001
        if self.session is None:
            self.session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._limit), timeout=self._timeout
            )
        if self._base and url.startswith(TWILIO_BASE):
            url = self._base + url[len(TWILIO_BASE):]
        headers = dict(headers or {})
        if auth is not None:
            headers["Authorization"] = aiohttp.encode_basic_auth(auth[0], auth[1])
        async with self.session.request(method.upper(), url, params=params, data=data,
                                        headers=headers, allow_redirects=allow_redirects) as r:
            return Response(r.status, await r.text(), r.headers)

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None


def classify_client_error(exc: BaseException) -> SendOutcome:
    """Whether a failed HTTP call could have reached the provider."""
    # Refused, unreachable, or no connection within the connect timeout: no byte was sent.
    if isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError):
        return SendOutcome.RETRY
    return SendOutcome.UNKNOWN  # read timeouts, cut connections and the rest: the request left


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
        concurrency: int = 100,
    ):
        if not (messaging_service_sid or from_number):
            raise ValueError("Twilio needs a Messaging Service SID or a From number")
        self._http = _BaseUrlAsyncHttpClient(base_url, timeout, concurrency)
        self._client = Client(account_sid, auth_token, http_client=self._http)
        self._service = messaging_service_sid
        self._from = from_number
        self._callback = status_callback_url
        self._validity = validity_period_s
        self._concurrency = concurrency
        self._loop = asyncio.new_event_loop()

    def _kwargs(self, m: OutboundMessage) -> dict:
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
        return kwargs

    async def _send_one(self, m: OutboundMessage) -> SendResult:
        try:
            msg = await self._client.messages.create_async(**self._kwargs(m))
        except TwilioRestException as exc:
            if exc.status in _RETRYABLE_STATUS:
                return SendResult(SendOutcome.RETRY, error=f"twilio {exc.status}",
                                  retry_after=1.0 if exc.status == 429 else None)
            if 400 <= exc.status < 500:
                return SendResult(SendOutcome.FAILED, error=f"twilio {exc.status} {exc.code}")
            return SendResult(SendOutcome.UNKNOWN, error=f"twilio {exc.status}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            return SendResult(classify_client_error(exc), error=type(exc).__name__)
        return SendResult(SendOutcome.SENT, provider_id=msg.sid)

    async def _send_all(self, messages: list[OutboundMessage], pacer: Pacer | None,
                        handover: HandOver | None) -> list[SendResult]:
        slots = asyncio.Semaphore(self._concurrency)
        results: list[SendResult | None] = [None] * len(messages)

        async def one(i: int) -> None:
            m = messages[i]
            try:
                # One request, one message: asked just before it leaves, never for a batch
                if handover is not None and m.outbox_id not in await asyncio.wrap_future(
                        handover.submit([m.outbox_id])):
                    results[i] = NOT_HANDED
                    return
                results[i] = await self._send_one(m)
                if handover is not None and results[i].outcome in NOT_DELIVERED:
                    handover.release([m.outbox_id])
            finally:
                slots.release()
            if pacer is not None and results[i].retry_after:
                pacer.hold(results[i].retry_after)

        tasks = []
        for i, m in enumerate(messages):
            # A free slot first, then the turn: a send never waits for a slot after its turn
            # came, so late starts cannot bunch up (what a provider's per-second limit sees).
            await slots.acquire()
            if pacer is not None:
                # Segments are what Twilio's rate counts; each send starts when its turn comes.
                delay = pacer.due(segments(m.body)) - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
        return results  # type: ignore[return-value]

    def send_batch(self, messages: list[OutboundMessage], pacer: Pacer | None = None,
                   handover: HandOver | None = None) -> list[SendResult]:
        if not messages:
            return []
        return self._loop.run_until_complete(self._send_all(messages, pacer, handover))

    def close(self) -> None:
        if not self._loop.is_closed():
            self._loop.run_until_complete(self._http.close())
            self._loop.close()
