"""The webhook receiver: a FastAPI app, mounted by Airflow's api-server (plugins/) or served alone.

Routes, relative to where it is mounted (``/lifecycle`` in both cases):

* ``POST /sendgrid/events``  SendGrid Event Webhook batches (signed: ECDSA P-256)
* ``POST /twilio/status``    Twilio status callbacks (``?outbox_id=N``; X-Twilio-Signature)
* ``POST /twilio/inbound``   Twilio inbound SMS: STOP/START and friends (X-Twilio-Signature)
* ``GET  /health``           liveness, no warehouse access

A request is refused before anything is written: 413 if its body is too large, 401 without
signature headers, 403 with a wrong signature or (SendGrid) a stale timestamp, 400 if the body
is not what the provider sends, 503 when the receiver has no key configured or the warehouse is
unreachable (the providers retry). Logs name the route and the reason, never an address.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import psycopg
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from lifecycle.delivery.webhooks import sendgrid, twilio
from lifecycle.delivery.webhooks.events import Event, MalformedBody, WriteResult, write_events
from lifecycle.logs import get_logger, mask_email, mask_phone
from lifecycle.settings import Settings, get_settings

log = get_logger("lifecycle.webhooks")

PREFIX = "/lifecycle"
_EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'


class Rejected(Exception):
    """A request refused with ``status``; ``reason`` is logged (it holds no personal data)."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


class Receiver:
    """Settings and warehouse URL, resolved on first use (nothing at import touches either)."""

    def __init__(self, settings: Settings | None = None,
                 url: str | Callable[[], str] | None = None):
        self._settings = settings
        self._url = url
        self._resolved_url: str | None = None
        self._sendgrid_key = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = get_settings()
        return self._settings

    def warehouse_url(self) -> str:
        if self._resolved_url is None:
            if callable(self._url):
                self._resolved_url = self._url()
            elif self._url:
                self._resolved_url = self._url
            else:
                from lifecycle.warehouse.server import resolve_url

                self._resolved_url = resolve_url(self.settings, start=False)
        return self._resolved_url

    def sendgrid_key(self):  # noqa: ANN201 - an EllipticCurvePublicKey
        if self._sendgrid_key is None:
            text = self.settings.sendgrid_webhook_public_key
            if not text:
                raise Rejected(503, "LIFECYCLE_SENDGRID_WEBHOOK_PUBLIC_KEY is not set")
            try:
                self._sendgrid_key = sendgrid.load_public_key(text)
            except ValueError as exc:
                raise Rejected(503, str(exc)) from exc
        return self._sendgrid_key

    def twilio_token(self) -> str:
        token = self.settings.twilio_auth_token
        if not token:
            raise Rejected(503, "LIFECYCLE_TWILIO_AUTH_TOKEN is not set")
        return token


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, refused (413) as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise Rejected(413, f"body of {declared} bytes exceeds {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Rejected(413, f"body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def signed_url(request: Request, public_url: str | None) -> str:
    """The URL Twilio requested: the public prefix + the route and query, else as received."""
    if not public_url:
        return str(request.url)
    root = request.scope.get("root_path", "")
    path = request.url.path
    route = path[len(root):] if root and path.startswith(root) else path
    query = request.url.query
    return public_url.rstrip("/") + route + (f"?{query}" if query else "")


def _reject(route: str, exc: Rejected) -> JSONResponse:
    log.warning("webhook %s refused (%d): %s", route, exc.status, exc.reason)
    return JSONResponse({"error": exc.reason}, status_code=exc.status)


def _store(receiver: Receiver, events: list[Event], ignored: int) -> WriteResult:
    try:
        return write_events(receiver.warehouse_url(), events, ignored=ignored,
                            settings=receiver.settings)
    except psycopg.OperationalError as exc:
        raise Rejected(503, f"warehouse unavailable ({type(exc).__name__})") from exc


def create_app(settings: Settings | None = None,
               url: str | Callable[[], str] | None = None) -> FastAPI:
    """The receiver app. ``url``: the warehouse, or a function returning it (called once)."""
    receiver = Receiver(settings, url)
    app = FastAPI(title="lifecycle provider webhooks", docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.receiver = receiver

    @app.get("/health")
    async def health() -> dict[str, bool]:
        return {"ok": True}

    @app.post("/sendgrid/events")
    async def sendgrid_events(request: Request) -> Response:
        route = "sendgrid/events"
        try:
            key = receiver.sendgrid_key()
            body = await read_body(request, receiver.settings.webhook_max_body_bytes)
            signature = request.headers.get(sendgrid.SIGNATURE_HEADER)
            timestamp = request.headers.get(sendgrid.TIMESTAMP_HEADER)
            if not signature or not timestamp:
                raise Rejected(401, "signature or timestamp header missing")
            if not sendgrid.timestamp_fresh(timestamp,
                                            receiver.settings.webhook_timestamp_tolerance_s):
                raise Rejected(403, "timestamp stale or not a unix time")
            if not sendgrid.signature_valid(key, signature, timestamp, body):
                raise Rejected(403, "signature does not verify")
            try:
                events, ignored = sendgrid.parse_batch(body)
            except MalformedBody as exc:
                raise Rejected(400, str(exc)) from exc
            result = await run_in_threadpool(_store, receiver, events, ignored)
        except Rejected as exc:
            return _reject(route, exc)
        _log_suppressions(route, events, result)
        return JSONResponse(result.as_dict())

    async def _twilio(request: Request, route: str, build: Callable[..., Event | None],
                      **kw: object) -> WriteResult:
        token = receiver.twilio_token()
        body = await read_body(request, receiver.settings.webhook_max_body_bytes)
        try:
            params = twilio.parse_form(body)
        except MalformedBody as exc:
            raise Rejected(400, str(exc)) from exc
        signature = request.headers.get(twilio.SIGNATURE_HEADER)
        if not signature:
            raise Rejected(401, "X-Twilio-Signature missing")
        url = signed_url(request, receiver.settings.webhook_public_url)
        if not twilio.signature_valid(token, url, params, signature,
                                      request.headers.get(twilio.SIGNATURE_SETTINGS_HEADER)):
            raise Rejected(403, "signature does not verify")
        try:
            event = build(params, received_at=datetime.now(UTC), **kw)
        except MalformedBody as exc:
            raise Rejected(400, str(exc)) from exc
        events = [event] if event is not None else []
        result = await run_in_threadpool(_store, receiver, events, 0 if events else 1)
        _log_suppressions(route, events, result)
        return result

    @app.post("/twilio/status")
    async def twilio_status(request: Request) -> Response:
        try:
            await _twilio(request, "twilio/status", twilio.status_event,
                          outbox_id=request.query_params.get("outbox_id"))
        except Rejected as exc:
            return _reject("twilio/status", exc)
        return Response(status_code=204)

    @app.post("/twilio/inbound")
    async def twilio_inbound(request: Request) -> Response:
        try:
            await _twilio(request, "twilio/inbound", twilio.inbound_event,
                          settings=receiver.settings)
        except Rejected as exc:
            return _reject("twilio/inbound", exc)
        return Response(_EMPTY_TWIML, media_type="text/xml")

    return app


def _log_suppressions(route: str, events: list[Event], result: WriteResult) -> None:
    log.info("webhook %s: %s", route, result.as_dict())
    if not result.inserted:
        return
    for e in events:
        if e.suppression:
            masked = mask_phone(e.address) if e.channel == "sms" else mask_email(e.address)
            log.info("webhook %s: %s for %s (outbox %s)", route, e.suppression, masked,
                     e.outbox_id)


def standalone_app(settings: Settings | None = None,
                   url: str | Callable[[], str] | None = None) -> FastAPI:
    """The receiver under ``/lifecycle``, as Airflow mounts it: the same URLs either way."""
    root = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    root.mount(PREFIX, create_app(settings, url))
    return root


def serve(host: str, port: int, settings: Settings | None = None, url: str | None = None) -> None:
    """Serve the receiver in the foreground (``lifecycle webhooks serve``)."""
    import uvicorn

    uvicorn.run(standalone_app(settings, url), host=host, port=port, log_level="info",
                access_log=False)
