"""Signed provider webhooks over real HTTP into the warehouse: events, dedupe, opt-outs, refusals.

Keys and signatures are made here (ECDSA P-256 for SendGrid, HMAC-SHA1 with an auth token for
Twilio); the receiver runs under uvicorn and verifies them with its real code.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, date, datetime, timedelta

import httpx
import psycopg
import pytest
from webhook_client import (
    SendGridKey,
    events_and_suppressions,
    sendgrid_body,
    serving,
    table,
    twilio_signature,
    webhook_settings,
)

D = date(2026, 6, 1)
T0 = datetime(2026, 6, 1, 10, tzinfo=UTC)
PHONE_A, PHONE_B = "+380671110001", "+380671110002"


def _outbox(url: str, rows: list[tuple[str, str, str]]) -> dict[str, int]:
    """Planned outbox rows (customer, channel, address); customer -> outbox id."""
    ids = {}
    with psycopg.connect(url) as conn:
        for i, (customer, channel, to) in enumerate(rows):
            ids[customer] = conn.execute(
                "insert into ops.outbox (message_key, plan_date, customer_id, phase, step,"
                " cycle_key, channel, to_address, subject, body, send_at, window_end_at,"
                " deadline_at) values (%s, %s, %s, 'retention', 1, 'M', %s, %s, %s, 'Hi', %s,"
                " %s, %s) returning outbox_id",
                (f"k{i}", D, customer, channel, to, "Renew" if channel == "email" else None,
                 T0, T0 + timedelta(hours=10), T0 + timedelta(hours=24)),
            ).fetchone()[0]
    return ids


@pytest.fixture
def key() -> SendGridKey:
    return SendGridKey()


@pytest.fixture
def receiver(fresh_db, key):
    with serving(fresh_db, webhook_settings(key)) as base:
        yield base


def _post_sendgrid(base: str, key: SendGridKey, events: list[dict], **kw) -> httpx.Response:
    body = sendgrid_body(events)
    return httpx.post(f"{base}/sendgrid/events", content=body, headers=key.headers(body, **kw))


def _post_twilio(base: str, route: str, params: dict[str, str], query: str = "",
                 signed_url: str | None = None) -> httpx.Response:
    url = f"{base}/twilio/{route}{query}"
    sig = twilio_signature(signed_url or url, params)
    return httpx.post(url, data=params, headers={"X-Twilio-Signature": sig})


def _sg(event: str, outbox_id: int | None, email: str, ts: int, **extra) -> dict:
    e = {"event": event, "email": email, "timestamp": ts,
         "sg_event_id": f"ev-{event}-{outbox_id}-{ts}", "sg_message_id": f"msg{outbox_id}.filter",
         **extra}
    if outbox_id is not None:
        e["outbox_id"] = str(outbox_id)
    return e


def test_every_sendgrid_event_kind_reaches_the_warehouse_and_suppresses(fresh_db, receiver, key):
    ids = _outbox(fresh_db, [(f"C{i}", "email", f"c{i}@example.com") for i in range(7)])
    ts = int(time.time())
    batch = [
        _sg("processed", ids["C0"], "c0@example.com", ts),
        _sg("delivered", ids["C0"], "c0@example.com", ts + 1, response="250 OK"),
        _sg("deferred", ids["C1"], "c1@example.com", ts, response="451 try later"),
        _sg("open", ids["C0"], "c0@example.com", ts + 2),
        _sg("click", ids["C0"], "c0@example.com", ts + 3, url="https://club.example/offer"),
        _sg("bounce", ids["C2"], "c2@example.com", ts, type="bounce", reason="550 no such user"),
        _sg("bounce", ids["C3"], "c3@example.com", ts, type="blocked", reason="421 later"),
        _sg("dropped", ids["C4"], "c4@example.com", ts, reason="Bounced Address"),
        _sg("spamreport", ids["C5"], "C5@Example.com", ts),
        _sg("unsubscribe", ids["C6"], "c6@example.com", ts),
        # custom_args nested (as some relays forward it) and an unsubscribe by group
        {**_sg("group_unsubscribe", None, "c1@example.com", ts, asm_group_id=7),
         "custom_args": {"outbox_id": str(ids["C1"])}},
        # a kind SendGrid may add later: acknowledged, not recorded
        _sg("machine_opened", ids["C0"], "c0@example.com", ts),
    ]
    r = _post_sendgrid(receiver, key, batch)
    assert r.status_code == 200, r.text
    assert r.json()["inserted"] == 11 and r.json()["ignored"] == 1
    rows = table(fresh_db, "select event_type, outbox_id, reason, suppression "
                           "from ops.message_events order by event_id")
    assert [(t, o) for t, o, _, _ in rows] == [
        ("processed", ids["C0"]), ("delivered", ids["C0"]), ("deferred", ids["C1"]),
        ("open", ids["C0"]), ("click", ids["C0"]), ("bounce", ids["C2"]), ("bounce", ids["C3"]),
        ("dropped", ids["C4"]), ("spamreport", ids["C5"]), ("unsubscribe", ids["C6"]),
        ("group_unsubscribe", ids["C1"]),
    ]
    assert rows[4][2] == "https://club.example/offer"
    assert table(fresh_db, "select customer_id, channel, reason, source from ops.suppressions "
                           "order by 1") == [
        ("C1", "email", "opted_out", "sendgrid"),
        ("C2", "email", "hard_bounce", "sendgrid"),  # a blocked (soft) bounce (C3) is not
        ("C4", "email", "hard_bounce", "sendgrid"),
        ("C5", "email", "spam_complaint", "sendgrid"),
        ("C6", "email", "opted_out", "sendgrid"),
    ]


def test_replayed_and_retried_sendgrid_deliveries_change_nothing(fresh_db, receiver, key):
    ids = _outbox(fresh_db, [("C0", "email", "c0@example.com")])
    ts = int(time.time())
    batch = [_sg("delivered", ids["C0"], "c0@example.com", ts),
             _sg("unsubscribe", ids["C0"], "c0@example.com", ts + 5)]
    assert _post_sendgrid(receiver, key, batch).json()["inserted"] == 2
    first = events_and_suppressions(fresh_db)
    # the same body again, then a retry whose sg_event_ids changed, then one event twice in a batch
    again = _post_sendgrid(receiver, key, batch)
    retried = _post_sendgrid(receiver, key, [{**e, "sg_event_id": "new-" + e["sg_event_id"]}
                                             for e in batch])
    doubled = _post_sendgrid(receiver, key, [batch[0], batch[0]])
    assert [r.json()["duplicates"] for r in (again, retried, doubled)] == [2, 2, 2]
    assert events_and_suppressions(fresh_db) == first
    assert len(first[0]) == 2 and len(first[1]) == 1


def test_sendgrid_refusals_write_nothing(fresh_db, key, caplog):
    _outbox(fresh_db, [("C0", "email", "olena.koval@example.com")])
    event = [_sg("unsubscribe", 1, "olena.koval@example.com", int(time.time()))]
    body = sendgrid_body(event)
    other = SendGridKey()
    with caplog.at_level(logging.INFO, logger="lifecycle.webhooks"), \
            serving(fresh_db, webhook_settings(key, webhook_max_body_bytes=400)) as base:
        url = f"{base}/sendgrid/events"
        statuses = {
            "no headers": httpx.post(url, content=body).status_code,
            "other key": httpx.post(url, content=body, headers=other.headers(body)).status_code,
            "stale": httpx.post(url, content=body,
                                headers=key.headers(body, int(time.time()) - 3600)).status_code,
            "tampered": httpx.post(url, content=body.replace(b"unsubscribe", b"delivered"),
                                   headers=key.headers(body)).status_code,
            "not json": httpx.post(url, content=b"{nope",
                                   headers=key.headers(b"{nope")).status_code,
            "not a batch": httpx.post(url, content=b'{"event": "open"}',
                                      headers=key.headers(b'{"event": "open"}')).status_code,
            "too big": httpx.post(url, content=b"[" + b" " * 500 + b"]",
                                  headers=key.headers(b"[" + b" " * 500 + b"]")).status_code,
        }
    assert statuses == {"no headers": 401, "other key": 403, "stale": 403, "tampered": 403,
                        "not json": 400, "not a batch": 400, "too big": 413}
    assert events_and_suppressions(fresh_db) == ([], [])
    assert "olena" not in caplog.text and "refused (403)" in caplog.text


@pytest.mark.parametrize("status", ["queued", "sent", "delivered", "undelivered", "failed"])
def test_twilio_status_callbacks_map_to_the_outbox(fresh_db, receiver, status):
    ids = _outbox(fresh_db, [("A", "sms", PHONE_A)])
    params = {"MessageSid": "SM" + "a" * 32, "MessageStatus": status, "To": PHONE_A,
              "AccountSid": "AC" + "0" * 32}
    r = _post_twilio(receiver, "status", params, f"?outbox_id={ids['A']}")
    assert r.status_code == 204, r.text
    assert _post_twilio(receiver, "status", params, f"?outbox_id={ids['A']}").status_code == 204
    assert table(fresh_db, "select provider, event_type, outbox_id, provider_message_id "
                           "from ops.message_events") == [
        ("twilio", status, ids["A"], "SM" + "a" * 32)
    ]


def test_twilio_refuses_sending_to_an_opted_out_number_suppresses_it(fresh_db, receiver):
    ids = _outbox(fresh_db, [("A", "sms", PHONE_A)])
    params = {"MessageSid": "SM" + "b" * 32, "MessageStatus": "failed", "ErrorCode": "21610",
              "To": PHONE_A}
    assert _post_twilio(receiver, "status", params, f"?outbox_id={ids['A']}").status_code == 204
    assert table(fresh_db, "select customer_id, reason from ops.suppressions") == [
        ("A", "opted_out")]


@pytest.mark.parametrize("text", ["STOP", " stop ", "Stop\n", "STOPALL", "unsubscribe",
                                  "Cancel", "END", "quit"])
def test_inbound_stop_words_opt_the_number_out_and_start_opts_back_in(fresh_db, receiver, text):
    _outbox(fresh_db, [("A", "sms", PHONE_A), ("B", "sms", PHONE_B), ("A2", "email", PHONE_A)])
    with psycopg.connect(fresh_db) as conn:  # the same person also in raw, written nationally
        conn.execute("insert into raw.customers (customer_id, phone, created_at) "
                     "values ('A3', '+380 67 111 0001', now())")
    params = {"MessageSid": "SM" + "c" * 32, "From": PHONE_A, "To": "+15005550006",
              "Body": text}
    r = _post_twilio(receiver, "inbound", params)
    assert r.status_code == 200 and "<Response>" in r.text
    assert table(fresh_db, "select customer_id, channel, reason, source from ops.suppressions "
                           "order by 1") == [("A", "sms", "opted_out", "twilio"),
                                             ("A3", "sms", "opted_out", "twilio")]
    assert table(fresh_db, "select event_type, address, customers_affected "
                           "from ops.message_events") == [("inbound_opt_out", PHONE_A, 2)]
    start = {**params, "MessageSid": "SM" + "d" * 32, "Body": " start "}
    assert _post_twilio(receiver, "inbound", start).status_code == 200
    assert table(fresh_db, "select * from ops.suppressions") == []
    # the STOP retried after the START is the same event: it does not opt out again
    assert _post_twilio(receiver, "inbound", params).status_code == 200
    assert table(fresh_db, "select * from ops.suppressions") == []


def test_inbound_opt_in_lifts_only_an_opt_out(fresh_db, receiver):
    _outbox(fresh_db, [("A", "sms", PHONE_A)])
    with psycopg.connect(fresh_db) as conn:
        conn.execute("insert into ops.suppressions values ('A', 'sms', 'manual', 'manual:ops')")
    start = {"MessageSid": "SM" + "e" * 32, "From": PHONE_A, "Body": "UNSTOP"}
    assert _post_twilio(receiver, "inbound", start).status_code == 200
    assert table(fresh_db, "select reason from ops.suppressions") == [("manual",)]


def test_other_inbound_text_is_recorded_without_its_words(fresh_db, receiver):
    _outbox(fresh_db, [("A", "sms", PHONE_A)])
    params = {"MessageSid": "SM" + "f" * 32, "From": PHONE_A, "Body": "please stop texting me"}
    assert _post_twilio(receiver, "inbound", params).status_code == 200
    assert table(fresh_db, "select event_type, reason, suppression from ops.message_events") == [
        ("inbound", None, None)]
    assert table(fresh_db, "select * from ops.suppressions") == []


def test_twilio_refusals_write_nothing(fresh_db, receiver, caplog):
    _outbox(fresh_db, [("A", "sms", PHONE_A)])
    url = f"{receiver}/twilio/inbound"
    params = {"MessageSid": "SM" + "1" * 32, "From": PHONE_A, "Body": "STOP"}
    good = twilio_signature(url, params)
    with caplog.at_level(logging.INFO, logger="lifecycle.webhooks"):
        statuses = [
            httpx.post(url, data=params).status_code,
            httpx.post(url, data=params, headers={"X-Twilio-Signature": "AAAA"}).status_code,
            # signed with another token, and signed for another URL
            httpx.post(url, data=params, headers={
                "X-Twilio-Signature": twilio_signature(url, params, token="other")}).status_code,
            httpx.post(url + "?x=1", data=params, headers={"X-Twilio-Signature": good}).status_code,
            # the signature holds but the body was changed
            httpx.post(url, data={**params, "From": PHONE_B},
                       headers={"X-Twilio-Signature": good}).status_code,
            httpx.post(url, content=b"\xff\xfe=%%", headers={"X-Twilio-Signature": good,
                       "Content-Type": "application/x-www-form-urlencoded"}).status_code,
            # signed, but not a message (no sid)
            httpx.post(url, data={"Body": "STOP"}, headers={
                "X-Twilio-Signature": twilio_signature(url, {"Body": "STOP"})}).status_code,
        ]
    assert statuses == [401, 403, 403, 403, 403, 400, 400]
    assert events_and_suppressions(fresh_db) == ([], [])
    assert PHONE_A not in caplog.text and PHONE_B not in caplog.text


def test_twilio_signature_is_checked_against_the_public_url(fresh_db, key):
    _outbox(fresh_db, [("A", "sms", PHONE_A)])
    public = "https://hooks.example.com/lifecycle"
    settings = webhook_settings(key, webhook_public_url=public)
    params = {"MessageSid": "SM" + "2" * 32, "From": PHONE_A, "Body": "stop"}
    with serving(fresh_db, settings) as base:
        local = _post_twilio(base, "inbound", params)
        behind_proxy = _post_twilio(base, "inbound", params,
                                    signed_url=f"{public}/twilio/inbound")
    assert (local.status_code, behind_proxy.status_code) == (403, 200)
    assert table(fresh_db, "select customer_id from ops.suppressions") == [("A",)]


def test_unconfigured_receiver_refuses_with_503(fresh_db):
    from lifecycle.settings import Settings

    with serving(fresh_db, Settings(sendgrid_webhook_public_key=None,
                                    twilio_auth_token=None)) as base:
        assert httpx.post(f"{base}/sendgrid/events", content=b"[]").status_code == 503
        assert httpx.post(f"{base}/twilio/inbound", data={"Body": "STOP"}).status_code == 503
        assert httpx.get(f"{base}/health").json() == {"ok": True}
    assert events_and_suppressions(fresh_db) == ([], [])


def test_a_hard_bounce_marks_the_email_dead_and_a_soft_one_or_a_complaint_does_not(
        fresh_db, receiver, key):
    ids = _outbox(fresh_db, [(f"C{i}", "email", f"c{i}@example.com") for i in range(5)])
    ts = int(time.time())
    batch = [
        _sg("bounce", ids["C0"], "C0@Example.com", ts, type="bounce", reason="550 no such user"),
        _sg("bounce", ids["C1"], "c1@example.com", ts, type="blocked", reason="421 later"),
        _sg("dropped", ids["C2"], "c2@example.com", ts, reason="Bounced Address"),
        _sg("spamreport", ids["C3"], "c3@example.com", ts),
        _sg("deferred", ids["C4"], "c4@example.com", ts, response="451 try later"),
    ]
    r = _post_sendgrid(receiver, key, batch)
    assert r.status_code == 200 and r.json()["dead"] == 2, r.text
    assert table(fresh_db, "select kind, address, evidence, observed_at, source "
                           "from ops.dead_contacts order by address") == [
        ("email", "c0@example.com", "hard_bounce", datetime.fromtimestamp(ts, UTC), "sendgrid"),
        ("email", "c2@example.com", "hard_bounce", datetime.fromtimestamp(ts, UTC), "sendgrid"),
    ]
    # the same batch retried marks nothing again
    assert _post_sendgrid(receiver, key, batch).json()["dead"] == 0


@pytest.mark.parametrize(("status", "error", "evidence"), [
    ("undelivered", "30005", "undelivered"),  # unknown handset: no longer in service
    ("undelivered", "30006", "carrier_failure"),  # landline or unreachable carrier
    ("failed", "21211", "undelivered"),  # invalid To number
    ("failed", "21614", "undelivered"),  # not a mobile number
    ("undelivered", "30003", None),  # handset off or out of coverage: temporary
    ("undelivered", "30007", None),  # carrier filtering: about the text, not the number
    ("failed", "30008", None),  # unknown error
    ("delivered", "30005", None),  # an error code on a delivered status proves nothing
])
def test_a_twilio_failure_marks_the_number_dead_only_for_a_dead_number_error(
        fresh_db, receiver, status, error, evidence):
    ids = _outbox(fresh_db, [("A", "sms", PHONE_A)])
    params = {"MessageSid": "SM" + "9" * 32, "MessageStatus": status, "ErrorCode": error,
              # as a club might have stored it: the dead number is kept in E.164
              "To": "+380 67 111 0001"}
    assert _post_twilio(receiver, "status", params, f"?outbox_id={ids['A']}").status_code == 204
    dead = table(fresh_db, "select kind, address, evidence, source from ops.dead_contacts")
    assert dead == ([("phone", PHONE_A, evidence, "twilio")] if evidence else [])
    # the event is recorded either way, with its error code
    assert table(fresh_db, "select event_type, reason from ops.message_events") == [
        (status, f"error {error}")]
