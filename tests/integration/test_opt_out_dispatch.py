"""An opt-out between planning and dispatch stops the send; reconciliation resolves unknowns.

Planning runs on a hand-built customer_facts (as in test_plan_dispatch), the STOP arrives as a
signed inbound SMS over HTTP, and dispatch goes through the real SDKs to the stand-in provider,
whose log of accepted messages is what a customer would have received.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import httpx
import psycopg
import pytest
from test_plan_dispatch import RULES, SETTINGS, D, customer_ids, facts_row, load_facts
from webhook_client import SendGridKey, sendgrid_body, serving, table, twilio_signature
from webhook_client import webhook_settings as receiver_settings

from lifecycle.delivery.dispatch import dispatch
from lifecycle.delivery.reconcile import reconcile
from lifecycle.delivery.standin import StandinServer
from lifecycle.delivery.transports import get_transport
from lifecycle.pipeline import logical_now
from lifecycle.planning.outbox import plan_day
from lifecycle.settings import Settings

PHONES = ["+380671230001", "+380671230002", "+380671230003"]


@pytest.fixture
def planned(fresh_db):
    """Three retention customers planned on D, SMS preferred; one also reachable by email."""
    a, b, c = customer_ids(3, control=False)
    load_facts(fresh_db, [facts_row(cid, days_until_end=20, phone=phone)
                          for cid, phone in zip((a, b, c), PHONES, strict=True)])
    report = plan_day(fresh_db, RULES, D, SETTINGS)
    assert report.inserted_messages == 3
    return fresh_db, (a, b, c)


def _stop(base: str, phone: str, sid: str) -> int:
    url = f"{base}/twilio/inbound"
    params = {"MessageSid": sid, "From": phone, "To": "+15005550006", "Body": " Stop "}
    return httpx.post(url, data=params,
                      headers={"X-Twilio-Signature": twilio_signature(url, params)}).status_code


def test_stop_between_planning_and_dispatch_prevents_the_send(planned):
    url, (a, b, c) = planned
    assert table(url, "select customer_id, channel, status from ops.outbox order by 1") == [
        (a, "sms", "planned"), (b, "sms", "planned"), (c, "sms", "planned")]
    with serving(url, receiver_settings(SendGridKey())) as base:
        assert _stop(base, PHONES[0], "SM" + "9" * 32) == 200
    with StandinServer() as server:
        settings = Settings(transport="standin", standin_url=server.url)
        transport = get_transport("standin", url, settings)
        try:
            dispatch(url, transport, now=logical_now(D), plan_date=D, settings=settings,
                     throttles={})
        finally:
            transport.close()
        accepted = [(x.provider, x.to) for x in server.provider.accepted]
    assert ("twilio", PHONES[0]) not in accepted
    assert sorted(accepted) == [("twilio", PHONES[1]), ("twilio", PHONES[2])]
    assert table(url, "select customer_id, status, last_error from ops.outbox order by 1") == [
        (a, "expired", "opted_out"), (b, "sent", None), (c, "sent", None)]
    # planning again (a rerun of D, or the next day) does not bring the message back
    again = plan_day(url, RULES, D, SETTINGS)
    assert again.inserted_messages == 0


def test_claim_skips_every_suppression_reason_not_only_opt_outs(planned):
    url, (a, b, c) = planned
    from lifecycle.delivery.dispatch import claim

    with psycopg.connect(url) as conn:
        conn.execute("insert into ops.suppressions values (%s, 'sms', 'manual', 'manual:test')",
                     (b,))
        conn.commit()
        claimed = claim(conn, now=logical_now(D), lease=timedelta(minutes=5), limit=10,
                        plan_date=D)
    assert sorted(m.customer_id for m in claimed) == sorted([a, c])
    assert table(url, "select customer_id, status, last_error from ops.outbox "
                      "where status = 'expired'") == [(b, "expired", "suppressed")]


def test_reconcile_resolves_unknown_rows_from_events_only(planned):
    url, (a, b, c) = planned
    now = datetime.now(UTC)
    with psycopg.connect(url) as conn:
        ids = dict(conn.execute("select customer_id, outbox_id from ops.outbox").fetchall())
        conn.execute("update ops.outbox set status = 'unknown', last_error = 'ReadTimeout'")
        # c turned unknown long ago; a and b just now
        conn.execute("update ops.outbox set updated_at = %s where customer_id = %s",
                     (now - timedelta(hours=49), c))
    key = SendGridKey()
    with serving(url, receiver_settings(key)) as base:
        # a: Twilio saw it (a callback names its outbox id)
        cb = f"{base}/twilio/status?outbox_id={ids[a]}"
        params = {"MessageSid": "SM" + "5" * 32, "MessageStatus": "delivered", "To": PHONES[0]}
        assert httpx.post(cb, data=params, headers={
            "X-Twilio-Signature": twilio_signature(cb, params)}).status_code == 204
        # b: only a SendGrid event names it: the wrong provider for an SMS, so no evidence
        body = sendgrid_body([{"event": "delivered", "timestamp": int(time.time()),
                               "outbox_id": ids[b], "email": "x@example.com"}])
        assert httpx.post(f"{base}/sendgrid/events", content=body,
                          headers=key.headers(body)).status_code == 200
    report = reconcile(url, now=now, settings=Settings(reconcile_deadline_hours=48))
    assert (report.sent, report.expired) == (1, 1)
    assert [u.outbox_id for u in report.unresolved] == [ids[b]]
    rows = table(url, "select customer_id, status, provider_id, last_error from ops.outbox "
                      "order by 1")
    assert rows == [
        (a, "sent", "SM" + "5" * 32, "reconciled: the provider reported it (delivered)"),
        (b, "unknown", None, "ReadTimeout"),
        (c, "expired", None, "reconciled: no provider event within 48 h of the unknown outcome"),
    ]
    # running it again changes nothing
    again = reconcile(url, now=now, settings=Settings(reconcile_deadline_hours=48))
    assert (again.sent, again.expired, len(again.unresolved)) == (0, 0, 1)
