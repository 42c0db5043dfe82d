"""Fuzzed bodies never crash the receiver, and nothing it refuses is written.

In-process (FastAPI's TestClient re-raises any server exception, so a crash fails the test),
with real signatures over the fuzzed bytes so the parsers behind the signature check are hit.
"""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from webhook_client import SendGridKey, table, twilio_signature, webhook_settings

from lifecycle.delivery.webhooks import standalone_app

FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True)
    | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner,
                                                                max_size=6),
    max_leaves=25,
)
# events close to SendGrid's shape, so the mapping code is reached past the first checks
sendgrid_like = st.lists(st.fixed_dictionaries(
    {"event": st.sampled_from(["processed", "delivered", "bounce", "dropped", "unsubscribe",
                               "click", "open", "spamreport", "zzz"]) | st.text(max_size=8),
     "timestamp": st.integers(min_value=-10, max_value=2**70) | st.text(max_size=12)
     | st.floats(allow_nan=True)},
    optional={"outbox_id": json_values, "email": json_values, "reason": json_values,
              "type": json_values, "url": json_values, "sg_event_id": json_values,
              "sg_message_id": json_values, "custom_args": json_values},
), max_size=6)


@pytest.fixture
def client(fresh_db):
    key = SendGridKey()
    app = standalone_app(webhook_settings(key, webhook_max_body_bytes=4096), fresh_db)
    with TestClient(app) as c:
        yield c, key, fresh_db


def _count(url: str) -> tuple[int, int]:
    return (table(url, "select count(*) from ops.message_events")[0][0],
            table(url, "select count(*) from ops.suppressions")[0][0])


def _check(url: str, before: tuple[int, int], status: int, allowed: set[int]) -> None:
    assert status in allowed
    if status not in (200, 204):  # 204: an accepted Twilio status callback (it may write)
        assert _count(url) == before


@FUZZ
@given(body=st.binary(max_size=5000), signed=st.booleans())
def test_sendgrid_random_bytes(client, body, signed):
    c, key, url = client
    before = _count(url)
    headers = key.headers(body) if signed else {}
    r = c.post("/lifecycle/sendgrid/events", content=body, headers=headers)
    _check(url, before, r.status_code, {200, 400, 413} if signed else {401, 413})


@FUZZ
@given(payload=json_values | sendgrid_like)
def test_sendgrid_signed_json_of_any_shape(client, payload):
    c, key, url = client
    body = json.dumps(payload).encode()
    before = _count(url)
    r = c.post("/lifecycle/sendgrid/events", content=body, headers=key.headers(body))
    _check(url, before, r.status_code, {200, 400, 413})


@FUZZ
@given(body=st.binary(max_size=5000), route=st.sampled_from(["status", "inbound"]))
def test_twilio_random_bytes(client, body, route):
    c, _, url = client
    before = _count(url)
    r = c.post(f"/lifecycle/twilio/{route}", content=body, headers={
        "X-Twilio-Signature": "x", "Content-Type": "application/x-www-form-urlencoded"})
    _check(url, before, r.status_code, {400, 403, 413})


@FUZZ
@given(params=st.dictionaries(
    st.sampled_from(["MessageSid", "SmsSid", "MessageStatus", "From", "To", "Body", "ErrorCode"])
    | st.text(min_size=1, max_size=10),
    st.text(max_size=40), max_size=7),
    route=st.sampled_from(["status", "inbound"]), query=st.sampled_from(["", "?outbox_id=1",
                                                                         "?outbox_id=x"]))
def test_twilio_signed_forms_of_any_content(client, params, route, query):
    c, _, url = client
    path = f"/lifecycle/twilio/{route}{query}"
    sig = twilio_signature("http://testserver" + path, params)
    before = _count(url)
    r = c.post(path, data=params, headers={"X-Twilio-Signature": sig})
    _check(url, before, r.status_code, {200, 204, 400})
