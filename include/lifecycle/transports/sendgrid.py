"""Email through the real ``sendgrid`` SDK (v3 mail send; the live API or the stand-in server).

Mail send takes no idempotency key either: a 429/503 or a refused connection was not processed
and may be retried; a timeout, a cut connection or another 5xx is ``UNKNOWN``.

One request carries up to 1000 personalizations, each with its own recipient, subject, body
(a substitution into the shared content) and outbox id in ``custom_args``, so events reconcile
per message and rendered, personal texts still share requests. Requests go out from a small
thread pool, each when the shared rate limit (requests/s) allows.
"""

from __future__ import annotations

import http.client
import queue
import threading
import time
import urllib.error
from concurrent.futures import Future, ThreadPoolExecutor

from python_http_client import exceptions as http_errors
from sendgrid import SendGridAPIClient

from lifecycle.throttle import Pacer
from lifecycle.transports.base import OutboundMessage, SendOutcome, SendResult

MAX_PERSONALIZATIONS = 1000
BODY_TAG = "-lifecycle_body-"
# SendGrid allows 10,000 bytes of substitutions per personalization; a longer body goes alone.
MAX_SUBSTITUTION_BYTES = 9_000


def _retry_after(exc: http_errors.HTTPError) -> float | None:
    headers = getattr(exc, "headers", None) or {}
    value = headers.get("Retry-After") if hasattr(headers, "get") else None
    try:
        return float(value) if value is not None else (1.0 if exc.status_code == 429 else None)
    except ValueError:
        return 1.0


def _requests(messages: list[OutboundMessage]) -> list[list[int]]:
    """Indexes of ``messages`` per request: up to 1000 substitutable ones, long bodies alone."""
    shared = [i for i, m in enumerate(messages)
              if len(m.body.encode()) <= MAX_SUBSTITUTION_BYTES]
    alone = [[i] for i, m in enumerate(messages) if len(m.body.encode()) > MAX_SUBSTITUTION_BYTES]
    return [shared[s:s + MAX_PERSONALIZATIONS]
            for s in range(0, len(shared), MAX_PERSONALIZATIONS)] + alone


class SendGridTransport:
    name = "sendgrid"

    def __init__(self, api_key: str, from_email: str, *, base_url: str | None = None,
                 timeout: float = 10.0, concurrency: int = 8):
        self._client = SendGridAPIClient(api_key=api_key,
                                         host=base_url or "https://api.sendgrid.com")
        self._client.client.timeout = timeout
        self._from = from_email
        self._pool = ThreadPoolExecutor(max_workers=concurrency,
                                        thread_name_prefix="sendgrid")
        self._free = threading.Semaphore(concurrency)

    def _payload(self, group: list[OutboundMessage]) -> dict:
        if len(group) == 1 and len(group[0].body.encode()) > MAX_SUBSTITUTION_BYTES:
            m = group[0]
            return {
                "from": {"email": self._from},
                "subject": m.subject or "",
                "content": [{"type": "text/plain", "value": m.body}],
                "personalizations": [{"to": [{"email": m.to_address}],
                                      "custom_args": {"outbox_id": str(m.outbox_id)}}],
            }
        return {
            "from": {"email": self._from},
            "content": [{"type": "text/plain", "value": BODY_TAG}],
            "personalizations": [
                {
                    "to": [{"email": m.to_address}],
                    "subject": m.subject or "",
                    "substitutions": {BODY_TAG: m.body},
                    "custom_args": {"outbox_id": str(m.outbox_id)},
                }
                for m in group
            ],
        }

    def _send_group(self, group: list[OutboundMessage]) -> SendResult:
        try:
            response = self._client.send(self._payload(group))
        except (http_errors.TooManyRequestsError, http_errors.ServiceUnavailableError) as exc:
            return SendResult(SendOutcome.RETRY, error=f"sendgrid {exc.status_code}",
                              retry_after=_retry_after(exc))
        except http_errors.HTTPError as exc:
            if 400 <= exc.status_code < 500:
                return SendResult(SendOutcome.FAILED, error=f"sendgrid {exc.status_code}")
            return SendResult(SendOutcome.UNKNOWN, error=f"sendgrid {exc.status_code}")
        except urllib.error.URLError as exc:
            refused = isinstance(exc.reason, ConnectionRefusedError)
            outcome = SendOutcome.RETRY if refused else SendOutcome.UNKNOWN
            return SendResult(outcome, error=f"URLError {type(exc.reason).__name__}")
        except (TimeoutError, http.client.HTTPException, ConnectionError) as exc:
            return SendResult(SendOutcome.UNKNOWN, error=type(exc).__name__)
        batch = response.headers.get("X-Message-Id") if response.headers else None
        return SendResult(SendOutcome.SENT, provider_id=batch)

    def send_batch(self, messages: list[OutboundMessage],
                   pacer: Pacer | None = None) -> list[SendResult]:
        results: list[SendResult | None] = [None] * len(messages)
        # Retry-After of 429s answered so far, handed from the pool's threads to this one: a
        # refusal slows the requests still to start, not only the next batch.
        holds: queue.SimpleQueue[float] = queue.SimpleQueue()

        def note_429(future: Future) -> None:
            if future.result().retry_after:
                holds.put(future.result().retry_after)

        pending = []
        for idxs in _requests(messages):
            # A free thread first, then the turn: a request never waits for a thread after its
            # turn came, so late starts cannot bunch up (what a per-second limit sees).
            self._free.acquire()
            if pacer is not None:
                while not holds.empty():
                    pacer.hold(holds.get())
                delay = pacer.due(1.0) - time.monotonic()  # the rate counts requests
                if delay > 0:
                    time.sleep(delay)
            future = self._pool.submit(self._send_group, [messages[i] for i in idxs])
            future.add_done_callback(note_429)
            future.add_done_callback(lambda _: self._free.release())
            pending.append((idxs, future))
        for idxs, future in pending:
            for i in idxs:
                results[i] = future.result()
        if pacer is not None:
            while not holds.empty():
                pacer.hold(holds.get())
        return results  # type: ignore[return-value]

    def close(self) -> None:
        self._pool.shutdown(wait=True)
