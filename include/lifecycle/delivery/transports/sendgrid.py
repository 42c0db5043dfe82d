"""Email through the real ``sendgrid`` SDK (v3 mail send; the live API or the stand-in server).

Mail send takes no idempotency key either: a 429/503 or a refused connection was not processed
and may be retried; a timeout, a cut connection or another 5xx is ``UNKNOWN``.

One request carries up to 1000 personalizations, each with its own recipient, subject, body
(a substitution into the shared content) and outbox id in ``custom_args``, so events reconcile
per message and rendered, personal texts still share requests. Requests go out from a small
thread pool, each when the shared rate limit (requests/s) allows, spaced by a start gate, and
never beyond what SendGrid's rate-limit headers say its current period has left.
"""

from __future__ import annotations

import http.client
import json
import queue
import threading
import time
import urllib.error
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from python_http_client import exceptions as http_errors
from sendgrid import SendGridAPIClient

from lifecycle.delivery.throttle import Pacer, StartGate
from lifecycle.delivery.transports.base import (
    NOT_DELIVERED,
    NOT_HANDED,
    HandOver,
    OutboundMessage,
    SendOutcome,
    SendResult,
)

MAX_PERSONALIZATIONS = 1000
BODY_TAG = "-lifecycle_body-"
# SendGrid allows 10,000 bytes of substitutions per personalization; a longer body goes alone.
MAX_SUBSTITUTION_BYTES = 9_000
# A request's payload (up to 1000 personalizations: ~12 ms of CPU, more on a busy machine) is
# built and encoded this long before it is due, so it can start on time.
PREPARE_S = 0.05


def _header(headers, name: str) -> str | None:
    return headers.get(name) if headers is not None and hasattr(headers, "get") else None


def _retry_after(exc: http_errors.HTTPError) -> float | None:
    """Seconds to hold the channel after a refusal: Retry-After, else until the rate-limit
    period resets (SendGrid's 429 carries X-RateLimit-Reset, no Retry-After), else 1 s."""
    headers = getattr(exc, "headers", None)
    value = _header(headers, "Retry-After")
    if value is not None:
        try:
            return float(value)
        except ValueError:
            return 1.0
    if exc.status_code != 429:
        return None
    try:
        reset = float(_header(headers, "X-RateLimit-Reset"))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 1.0
    return max(0.05, reset - time.time())


def _alone(body: str) -> bool:
    """A body too long to be a substitution: it goes in a request of its own."""
    # UTF-8 takes at most 4 bytes a character: most bodies need no encoding to tell
    return len(body) * 4 > MAX_SUBSTITUTION_BYTES and len(body.encode()) > MAX_SUBSTITUTION_BYTES


def _requests(messages: Sequence[OutboundMessage]
              ) -> Iterator[tuple[list[int], list[OutboundMessage]]]:
    """The requests for ``messages``, in order, each as (indexes, messages): up to 1000
    substitutable ones, a long body alone. Made as they are sent: the first request leaves
    without walking the whole batch first."""
    idxs: list[int] = []
    group: list[OutboundMessage] = []
    for i, m in enumerate(messages):
        if _alone(m.body):
            yield [i], [m]
            continue
        idxs.append(i)
        group.append(m)
        if len(group) == MAX_PERSONALIZATIONS:
            yield idxs, group
            idxs, group = [], []
    if group:
        yield idxs, group


class _RateLimitPeriod:
    """What SendGrid's X-RateLimit headers tell about its current refresh period.

    Every answer says how many requests the period has left and when it resets. A request
    may start while the lowest ``Remaining`` heard for the period, less the requests of ours
    still unanswered (the provider may have counted them already), is above zero; else it
    waits for the reset. So even with requests in flight we never send the one the period
    has no room for, whatever our own pacing (and a busy machine's jitter) would allow.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reset: float | None = None  # epoch seconds
        self._remaining = 0
        self._in_flight = 0

    def started(self) -> None:
        with self._lock:
            self._in_flight += 1

    def answered(self, headers) -> None:
        try:
            remaining = int(_header(headers, "X-RateLimit-Remaining"))  # type: ignore[arg-type]
            reset = float(_header(headers, "X-RateLimit-Reset"))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            remaining, reset = 0, None
        with self._lock:
            self._in_flight -= 1
            if reset is None:
                return
            if self._reset is None or reset > self._reset:
                self._reset, self._remaining = reset, remaining
            elif reset == self._reset:
                self._remaining = min(self._remaining, remaining)

    def wait_s(self) -> float:
        """Seconds until a request may start (0: now)."""
        with self._lock:
            if self._reset is None:
                return 0.0
            left = self._reset - time.time()
            if left <= 0 or self._remaining - self._in_flight > 0:
                return 0.0
            return left


def _hand_back_if_refused(handover: HandOver, group: list[OutboundMessage]):
    """A done-callback: a request the provider certainly did not take gives its rows back."""
    ids = [m.outbox_id for m in group]

    def done(future: Future) -> None:
        if future.result().outcome in NOT_DELIVERED:
            handover.release(ids)

    return done


class SendGridTransport:
    name = "sendgrid"

    def __init__(self, api_key: str, from_email: str, *, base_url: str | None = None,
                 timeout: float = 10.0, concurrency: int = 8):
        self._client = SendGridAPIClient(api_key=api_key,
                                         host=base_url or "https://api.sendgrid.com")
        self._client.client.timeout = timeout
        # Payloads are JSON-encoded here, before a request's turn (up to 1000
        # personalizations: ~5 ms of encoding that holds every thread); python_http_client
        # sends a body as it is when the content type is not the bare 'application/json'.
        self._client.client.request_headers["Content-Type"] = "application/json; charset=utf-8"
        self._from = from_email
        self._pool = ThreadPoolExecutor(max_workers=concurrency,
                                        thread_name_prefix="sendgrid")
        self._free = threading.Semaphore(concurrency)
        self._gate: StartGate | None = None
        self._period = _RateLimitPeriod()

    def _payload(self, group: list[OutboundMessage]) -> dict:
        if len(group) == 1 and _alone(group[0].body):
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

    def _send_group(self, payload: str) -> SendResult:
        self._period.started()
        headers = None
        try:
            response = self._client.client.mail.send.post(request_body=payload)
            headers = response.headers
        except http_errors.HTTPError as exc:
            headers = getattr(exc, "headers", None)
            return self._refused(exc)
        except urllib.error.URLError as exc:
            refused = isinstance(exc.reason, ConnectionRefusedError)
            outcome = SendOutcome.RETRY if refused else SendOutcome.UNKNOWN
            return SendResult(outcome, error=f"URLError {type(exc.reason).__name__}")
        except (TimeoutError, http.client.HTTPException, ConnectionError) as exc:
            return SendResult(SendOutcome.UNKNOWN, error=type(exc).__name__)
        finally:
            self._period.answered(headers)
        return SendResult(SendOutcome.SENT, provider_id=_header(headers, "X-Message-Id"))

    @staticmethod
    def _refused(exc: http_errors.HTTPError) -> SendResult:
        if isinstance(exc, (http_errors.TooManyRequestsError,
                            http_errors.ServiceUnavailableError)):
            return SendResult(SendOutcome.RETRY, error=f"sendgrid {exc.status_code}",
                              retry_after=_retry_after(exc))
        if 400 <= exc.status_code < 500:
            return SendResult(SendOutcome.FAILED, error=f"sendgrid {exc.status_code}")
        return SendResult(SendOutcome.UNKNOWN, error=f"sendgrid {exc.status_code}")

    def send_batch(self, messages: Sequence[OutboundMessage], pacer: Pacer | None = None,
                   handover: HandOver | None = None) -> list[SendResult]:
        results: list[SendResult | None] = [None] * len(messages)
        # Retry-After of 429s answered so far, handed from the pool's threads to this one: a
        # refusal slows the requests still to start, not only the next batch.
        holds: queue.SimpleQueue[float] = queue.SimpleQueue()

        def note_429(future: Future) -> None:
            if future.result().retry_after:
                holds.put(future.result().retry_after)

        if pacer is not None and (self._gate is None or self._gate.interval != 1 / pacer.rate):
            self._gate = StartGate(pacer.rate, tolerance_s=1 / pacer.rate)
        pending = []
        for idxs, group in _requests(messages):
            # A free thread first, then the turn: a request never waits for a thread after its
            # turn came. This thread encodes each payload just before its turn (encoding holds
            # every thread: not while another request is leaving) and the gate starts it at
            # its turn, never right behind a late one (what a provider's limit sees); the
            # pool's threads only speak HTTP.
            self._free.acquire()
            # The hand-over check runs while this thread waits for the request's turn; the
            # request waits for its answer, then leaves with only the rows still ours.
            checking = handover.submit([m.outbox_id for m in group]) if handover else None
            due = None
            if pacer is not None:
                while not holds.empty():
                    pacer.hold(holds.get())
                # the rate counts requests; the gate spaces them
                due = pacer.due(1.0, spaced=False)
                delay = due - PREPARE_S - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            if checking is not None:
                allowed = checking.result()
                kept = [(i, m) for i, m in zip(idxs, group, strict=True) if m.outbox_id in allowed]
                for i, m in zip(idxs, group, strict=True):
                    if m.outbox_id not in allowed:
                        results[i] = NOT_HANDED
                if not kept:
                    self._free.release()
                    continue
                idxs, group = [i for i, _ in kept], [m for _, m in kept]
            payload = json.dumps(self._payload(group))
            if due is not None:
                self._gate.wait(due)  # type: ignore[union-attr]
            # the provider's own count comes last: an answer may have come while we waited
            while (spent := self._period.wait_s()) > 0:
                time.sleep(spent)
            future = self._pool.submit(self._send_group, payload)
            if handover is not None:
                future.add_done_callback(_hand_back_if_refused(handover, group))
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
