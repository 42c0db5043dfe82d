"""The suppression of a number: every STOP writes it (matched to a customer or not), START lifts
it, and dispatch's claim holds it on its own."""

from __future__ import annotations

from datetime import timedelta

import httpx
import psycopg
from test_plan_dispatch import RULES, SETTINGS, D, customer_ids, facts_row, load_facts
from webhook_client import SendGridKey, serving, table, twilio_signature
from webhook_client import webhook_settings as receiver_settings

from lifecycle.delivery.dispatch import claim
from lifecycle.pipeline import logical_now
from lifecycle.planning.outbox import plan_day

UNKNOWN = "+380931112233"


def _sms(base: str, sender: str, body: str, sid: str) -> int:
    url = f"{base}/twilio/inbound"
    params = {"MessageSid": sid, "From": sender, "To": "+15005550006", "Body": body}
    return httpx.post(url, data=params,
                      headers={"X-Twilio-Signature": twilio_signature(url, params)}).status_code


def test_stop_from_an_unknown_number_is_kept_and_start_lifts_it(fresh_db: str) -> None:
    addresses = "select channel, address, reason, source from ops.address_suppressions"
    with serving(fresh_db, receiver_settings(SendGridKey())) as base:
        assert _sms(base, UNKNOWN, "СТОП!", "SM" + "1" * 32) == 200
        assert table(fresh_db, addresses) == [("sms", UNKNOWN, "opted_out", "twilio")]
        # no customer has the number: nothing per customer, the event says so
        assert table(fresh_db, "select count(*) from ops.suppressions") == [(0,)]
        assert table(fresh_db, "select event_type, customers_affected "
                               "from ops.message_events") == [("inbound_opt_out", 0)]
        # Twilio's retry of the same message changes nothing; a message that is no keyword
        # neither
        assert _sms(base, UNKNOWN, "СТОП!", "SM" + "1" * 32) == 200
        assert _sms(base, UNKNOWN, "стоп, а коли тренування?", "SM" + "2" * 32) == 200
        assert table(fresh_db, addresses) == [("sms", UNKNOWN, "opted_out", "twilio")]
        assert _sms(base, UNKNOWN, "Старт", "SM" + "3" * 32) == 200
        assert table(fresh_db, addresses) == []


def test_claim_holds_a_suppressed_number_by_itself(fresh_db: str) -> None:
    a, b = customer_ids(2, control=False)
    load_facts(fresh_db, [facts_row(a, days_until_end=20, phone="+380671230001"),
                          facts_row(b, days_until_end=20, phone="+380671230002")])
    assert plan_day(fresh_db, RULES, D, SETTINGS).inserted_messages == 2
    with psycopg.connect(fresh_db) as conn:
        # b's number was suppressed after planning; no customer-level row names b
        conn.execute("insert into ops.address_suppressions (channel, address, reason, source) "
                     "values ('sms', '+380671230002', 'opted_out', 'twilio')")
        conn.commit()
        claimed = claim(conn, now=logical_now(D), lease=timedelta(minutes=5), limit=10,
                        plan_date=D)
    assert [m.customer_id for m in claimed] == [a]
    assert table(fresh_db, "select customer_id, status, last_error from ops.outbox "
                           "order by 1") == [(a, "claimed", None), (b, "expired", "opted_out")]
