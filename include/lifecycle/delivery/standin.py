"""A local stand-in for Twilio's Messages API and SendGrid's v3 mail send, for tests and benchmarks.

The real ``twilio`` and ``sendgrid`` SDKs talk HTTP to it (pointed at it by base URL). It speaks
enough of both APIs for the SDKs to work (Twilio's Messages list too: reconciliation asks it what
was sent to a number), injects the faults a real provider shows (latency,
429/500/503, slow replies past the client's timeout, connections dropped before the request is
read, and "accepted, then the connection cut before the reply"), and logs every message it
accepted, so a test counts what a customer would actually have received.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import json
import random
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any, NamedTuple

from aiohttp import web

TWILIO_PATH = "/2010-04-01/Accounts/{account}/Messages.json"
SENDGRID_PATH = "/v3/mail/send"


@dataclass
class Faults:
    """Per-request fault probabilities (0..1) and delays; chosen by a seeded RNG."""

    latency_ms: float = 0.0
    error_429: float = 0.0  # refused, not processed (Retry-After sent)
    error_500: float = 0.0  # refused before processing
    error_503: float = 0.0  # refused before processing
    error_500_after_accept: float = 0.0  # processed, then 500: ambiguous for the client
    drop_before_accept: float = 0.0  # connection closed before the request is processed
    cut_after_accept: float = 0.0  # processed, connection closed before the reply
    slow_after_accept: float = 0.0  # processed, reply only after ``slow_ms``
    slow_ms: float = 5_000.0
    retry_after_s: int = 1
    # The provider's own rate limit (0 = none): 429 beyond it. Twilio's: a token bucket
    # refilled at max_rps that holds max_burst_s of traffic (at least 2 requests: arrival
    # times jitter by a few ms whatever the sender does). SendGrid's, as its v3 API documents
    # it: a fixed number of requests (max_rps) per refresh period (one second, aligned to
    # the epoch second), with X-RateLimit-Limit, -Remaining and -Reset (epoch seconds) on
    # every answer and a 429 without Retry-After once the period's requests are used up.
    max_rps: float = 0.0
    max_burst_s: float = 0.1
    seed: int = 0


class Accepted(NamedTuple):
    provider: str
    message_id: str
    to: str
    body: str
    outbox_id: str | None
    at: float


class StandinProvider:
    """The server's state: its faults and the log of accepted messages."""

    def __init__(self, faults: Faults | None = None):
        self.faults = faults or Faults()
        self._rng = random.Random(self.faults.seed)
        # Accepted messages as plain tuples: those drop out of the garbage collector's
        # tracking, so a log of a million does not make every full collection walk it (pauses
        # that would hold incoming requests and skew the rate limit's clock).
        self._accepted: list[tuple] = []
        self.accepted_requests: list[tuple[str, float]] = []
        self.requests = 0
        self.list_requests = 0  # Messages list requests (never faulted nor rate limited)
        self.rate_limited = 0  # 429s this server gave because its max_rps was exceeded
        self._tokens: float | None = None  # the rate limit's bucket (None: full)
        self._refilled = 0.0
        # Under a rate limit: when each request reached it (wall clock) and whether it was
        # refused, so a benchmark can see how close together requests came.
        self.limited_arrivals: list[tuple[float, bool]] = []
        self._period = (0, 0)  # SendGrid's refresh period: (epoch second, requests in it)
        self._lock = threading.Lock()

    def configure(self, **knobs: Any) -> None:
        self.faults = Faults(**{**asdict(self.faults), **knobs})
        self._rng = random.Random(self.faults.seed)

    def reset(self) -> None:
        with self._lock:
            self._accepted.clear()
            self.accepted_requests.clear()
            self.requests = 0
            self.list_requests = 0
            self.rate_limited = 0
            self._tokens = None
            self._period = (0, 0)
            self.limited_arrivals.clear()

    def _draw(self) -> str | None:
        f = self.faults
        r = self._rng.random()
        for name in ("error_429", "error_500", "error_503", "error_500_after_accept",
                     "drop_before_accept", "cut_after_accept", "slow_after_accept"):
            p = getattr(f, name)
            if r < p:
                return name
            r -= p
        return None

    @property
    def accepted(self) -> list[Accepted]:
        """Every message accepted so far, in order."""
        with self._lock:
            return list(map(Accepted._make, self._accepted))

    def _record(self, items: list[tuple]) -> None:
        at = time.time()
        with self._lock:
            self._accepted.extend(item + (at,) for item in items)
            if items:
                self.accepted_requests.append((items[0][0], at))

    def stats(self) -> dict[str, Any]:
        """Per provider: accepted messages and requests, when the first and last came, and the
        most requests accepted in any one second (what a rate limit is judged by)."""
        out: dict[str, Any] = {"requests": self.requests, "rate_limited": self.rate_limited}
        with self._lock:
            out["limited_arrivals"] = list(self.limited_arrivals)
            reqs = list(self.accepted_requests)
            counts = collections.Counter(a[0] for a in self._accepted)
        for provider in ("twilio", "sendgrid"):
            times = sorted(t for p, t in reqs if p == provider)
            peak, lo = 0, 0
            for hi, t in enumerate(times):
                while t - times[lo] >= 1.0:
                    lo += 1
                peak = max(peak, hi - lo + 1)
            out[provider] = {
                "messages": counts.get(provider, 0),
                "requests": len(times),
                "first_at": times[0] if times else None,
                "last_at": times[-1] if times else None,
                "peak_requests_in_1s": peak,
            }
        return out

    # ------------------------------------------------------------------ HTTP

    def _sendgrid_period(self) -> tuple[str | None, dict[str, str]]:
        """Count a request in SendGrid's refresh period; a 429 beyond the limit (lock held)."""
        limit = max(1, int(self.faults.max_rps))
        second = int(time.time())
        start, used = self._period
        if start != second:
            start, used = second, 0
        fault = "error_429" if used >= limit else None
        if fault is None:
            used += 1
        self._period = (start, used)
        return fault, {"X-RateLimit-Limit": str(limit),
                       "X-RateLimit-Remaining": str(limit - used),
                       "X-RateLimit-Reset": str(start + 1)}

    def _twilio_bucket(self) -> str | None:
        """Take a token from Twilio's bucket; a 429 when it is empty (lock held)."""
        now = time.monotonic()
        rate = self.faults.max_rps
        capacity = max(2.0, rate * self.faults.max_burst_s)
        tokens = capacity if self._tokens is None else min(
            capacity, self._tokens + (now - self._refilled) * rate)
        self._refilled = now
        fault = "error_429" if tokens < 1.0 else None
        self._tokens = tokens if fault else tokens - 1.0
        return fault

    async def _fault_or_none(self, request: web.Request, provider: str = "twilio"
                             ) -> tuple[str | None, web.Response | None, dict[str, str]]:
        limit_headers: dict[str, str] = {}
        with self._lock:
            self.requests += 1
            fault = self._draw()
            if self.faults.max_rps and fault is None:
                if provider == "sendgrid":
                    fault, limit_headers = self._sendgrid_period()
                else:
                    fault = self._twilio_bucket()
                if fault:
                    self.rate_limited += 1
                self.limited_arrivals.append((time.time(), fault is not None))
        if self.faults.latency_ms:
            await asyncio.sleep(self.faults.latency_ms / 1000)
        if fault == "error_429":
            return fault, _error(429, "Too Many Requests", limit_headers or
                                 {"Retry-After": str(self.faults.retry_after_s)}), {}
        if fault in ("error_500", "error_503"):
            return fault, _error(int(fault[-3:]), "Service unavailable"), {}
        if fault == "drop_before_accept":
            _cut(request)
            return fault, web.Response(status=500), {}
        return fault, None, limit_headers

    async def _after_accept(self, request: web.Request, fault: str | None,
                            ok: web.Response) -> web.Response:
        if fault == "error_500_after_accept":
            return _error(500, "Internal error")
        if fault == "cut_after_accept":
            _cut(request)
        elif fault == "slow_after_accept":
            await asyncio.sleep(self.faults.slow_ms / 1000)
        return ok

    async def twilio_messages(self, request: web.Request) -> web.Response:
        fault, refused, _ = await self._fault_or_none(request)
        if refused is not None:
            return refused
        form = await request.post()
        to, body = form.get("To"), form.get("Body")
        sender = form.get("From") or form.get("MessagingServiceSid")
        if not to or not body or not sender:
            return _json(400, {"code": 21604, "message": "To, Body and From or "
                               "MessagingServiceSid are required", "status": 400})
        if not str(to).startswith("+") or not str(to)[1:].isdigit():
            return _json(400, {"code": 21211, "message": f"The 'To' number {to} is not a valid "
                               "phone number.", "status": 400})
        sid = "SM" + uuid.uuid4().hex
        callback = str(form.get("StatusCallback") or "")
        outbox_id = callback.rsplit("outbox_id=", 1)[1] if "outbox_id=" in callback else None
        self._record([("twilio", sid, str(to), str(body), outbox_id)])
        account = request.match_info["account"]
        ok = _json(201, {
            "sid": sid, "account_sid": account, "to": to, "from": form.get("From"),
            "messaging_service_sid": form.get("MessagingServiceSid"), "body": body,
            "status": "queued", "num_segments": "1", "direction": "outbound-api",
            "date_created": time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime()),
            "uri": f"/2010-04-01/Accounts/{account}/Messages/{sid}.json",
        })
        return await self._after_accept(request, fault, ok)

    async def twilio_list(self, request: web.Request) -> web.Response:
        """GET Messages.json as Twilio answers it: newest first, filtered by To, From and
        DateSent (``DateSent``, ``DateSent<``, ``DateSent>``: a day, YYYY-MM-DD, or a time,
        YYYY-MM-DDTHH:MM:SSZ, both bounds inclusive), paged by PageSize/Page."""
        with self._lock:
            self.list_requests += 1
        q = request.query
        try:
            size = min(1000, max(1, int(q.get("PageSize", 50))))
            page = max(0, int(q.get("Page", 0)))
            bounds = [(op, _twilio_time(q[key])) for op, key in
                      (("=", "DateSent"), ("<", "DateSent<"), (">", "DateSent>")) if key in q]
        except ValueError as exc:
            return _json(400, {"code": 20001, "message": f"Invalid parameter: {exc}",
                               "status": 400})
        mine = []
        for a in reversed(self.accepted):
            if a.provider != "twilio" or ("To" in q and a.to != q["To"]):
                continue
            if all(_in_bound(a.at, op, bound) for op, bound in bounds):
                mine.append(a)
        account = request.match_info["account"]
        uri = f"/2010-04-01/Accounts/{account}/Messages.json"

        def page_uri(n: int) -> str:
            params = {k: v for k, v in q.items() if k not in ("Page", "PageToken", "PageSize")}
            params.update(PageSize=str(size), Page=str(n))
            if n:
                params["PageToken"] = f"PA{n * size}"
            return str(request.url.with_path(uri).with_query(params).relative())

        chunk = mine[page * size:(page + 1) * size]
        more = (page + 1) * size < len(mine)
        return _json(200, {
            "messages": [_twilio_message(account, a) for a in chunk],
            "end": page * size + max(len(chunk), 1) - 1, "start": page * size,
            "page": page, "page_size": size, "uri": page_uri(page),
            "first_page_uri": page_uri(0),
            "next_page_uri": page_uri(page + 1) if more else None,
            "previous_page_uri": page_uri(page - 1) if page else None,
        })

    async def sendgrid_send(self, request: web.Request) -> web.Response:
        fault, refused, limit_headers = await self._fault_or_none(request, "sendgrid")
        if refused is not None:
            return refused
        try:
            payload = await request.json()
        except json.JSONDecodeError:
            return _json(400, {"errors": [{"message": "Bad Request", "field": None}]})
        personalizations = payload.get("personalizations") or []
        if not 1 <= len(personalizations) <= 1000:
            return _json(400, {"errors": [{"message": "between 1 and 1000 personalizations",
                                           "field": "personalizations"}]})
        batch_id = uuid.uuid4().hex[:22]
        content = " ".join(c.get("value", "") for c in payload.get("content") or [])
        items = []
        for i, p in enumerate(personalizations):
            custom = {**(payload.get("custom_args") or {}), **(p.get("custom_args") or {})}
            body = content  # what this recipient reads: the content with their substitutions
            for tag, value in (p.get("substitutions") or {}).items():
                body = body.replace(tag, str(value))
            for rcpt in p.get("to") or []:
                items.append(("sendgrid", f"{batch_id}.{i}", rcpt.get("email", ""), body,
                              custom.get("outbox_id")))
        self._record(items)
        ok = web.Response(status=202, headers={"X-Message-Id": batch_id, **limit_headers})
        return await self._after_accept(request, fault, ok)

    async def control(self, request: web.Request) -> web.Response:
        if request.method == "POST" and request.path.endswith("/config"):
            self.configure(**(await request.json()))
            return _json(200, asdict(self.faults))
        if request.method == "POST" and request.path.endswith("/reset"):
            self.reset()
            return _json(200, {"reset": True})
        if request.path.endswith("/stats"):
            return _json(200, self.stats())
        return _json(200, {"requests": self.requests,
                           "accepted": [a._asdict() for a in self.accepted]})

    def app(self) -> web.Application:
        app = web.Application(client_max_size=32 * 1024 * 1024)
        app.router.add_post(TWILIO_PATH, self.twilio_messages)
        app.router.add_get(TWILIO_PATH, self.twilio_list)
        app.router.add_post(SENDGRID_PATH, self.sendgrid_send)
        app.router.add_route("*", "/_standin/{what}", self.control)
        return app


def _twilio_time(value: str) -> datetime | str:
    """A DateSent filter value: a day (kept as YYYY-MM-DD) or a UTC time."""
    value = value.strip()
    if len(value) == 10:
        datetime.strptime(value, "%Y-%m-%d")
        return value
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def _in_bound(at: float, op: str, bound: datetime | str) -> bool:
    when = datetime.fromtimestamp(at, UTC)
    if isinstance(bound, str):  # a day: compared by the day sent
        day = when.strftime("%Y-%m-%d")
        return {"=": day == bound, "<": day <= bound, ">": day >= bound}[op]
    when = when.replace(microsecond=0)
    return {"=": when == bound, "<": when <= bound, ">": when >= bound}[op]


def _twilio_message(account: str, a: Accepted) -> dict:
    sent = format_datetime(datetime.fromtimestamp(a.at, UTC).replace(microsecond=0),
                           usegmt=True)
    return {
        "sid": a.message_id, "account_sid": account, "to": a.to, "from": None,
        "messaging_service_sid": None, "body": a.body, "status": "delivered",
        "num_segments": "1", "direction": "outbound-api", "date_created": sent,
        "date_updated": sent, "date_sent": sent, "error_code": None, "error_message": None,
        "price": None, "price_unit": "USD", "api_version": "2010-04-01",
        "uri": f"/2010-04-01/Accounts/{account}/Messages/{a.message_id}.json",
    }


def _json(status: int, body: dict, headers: dict | None = None) -> web.Response:
    return web.json_response(body, status=status, headers=headers)


def _error(status: int, message: str, headers: dict | None = None) -> web.Response:
    return _json(status, {"code": 20000 + status, "message": message, "status": status,
                          "errors": [{"message": message}]}, headers)


def _cut(request: web.Request) -> None:
    transport = request.transport
    if transport is not None:
        transport.abort()


class StandinServer:
    """Run a StandinProvider on 127.0.0.1 in a background thread (tests, benchmarks)."""

    def __init__(self, provider: StandinProvider | None = None, port: int = 0):
        self.provider = provider or StandinProvider()
        self._port = port
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> StandinServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    async def _start(self) -> None:
        self._runner = web.AppRunner(self.provider.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self._port, backlog=1024)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def __enter__(self) -> StandinServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(port: int, faults: Faults | None = None) -> None:
    """Serve in the foreground until interrupted (``lifecycle standin serve``)."""
    gc.freeze()  # the server's own modules stay out of every collection (shorter pauses)
    web.run_app(StandinProvider(faults).app(), host="127.0.0.1", port=port, access_log=None)
