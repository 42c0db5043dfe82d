"""Dead contacts (ops.dead_contacts): planning skips the channels a dead phone or email serves,
whoever's record it was found on, and dispatch's claim holds one that died after planning."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from test_plan_dispatch import RULES, SETTINGS, D, customer_ids, facts_row, load_facts
from webhook_client import table

from lifecycle.contacts import mark_dead, normalize
from lifecycle.delivery.dispatch import claim
from lifecycle.pipeline import logical_now
from lifecycle.planning.outbox import plan_day

SEEN = datetime(2026, 6, 1, 12, tzinfo=UTC)


def _mark(url: str, kind: str, address: str, evidence: str) -> bool:
    with psycopg.connect(url) as conn:
        return mark_dead(conn, kind, address, evidence, SEEN, "test")


def test_a_dead_phone_moves_the_message_to_email_and_a_dead_pair_is_a_skip(fresh_db: str):
    a, b, c = customer_ids(3, control=False)
    # retention prefers sms, then email
    load_facts(fresh_db, [facts_row(a, days_until_end=20, phone="+380671230001"),
                          facts_row(b, days_until_end=20, phone="+380671230002"),
                          facts_row(c, days_until_end=20, phone="+380671230003")])
    # spaces and case as a club's records hold them: the same inbox
    assert _mark(fresh_db, "phone", "+380 67 123 00 01", "wrong_number")
    assert _mark(fresh_db, "phone", "+380671230002", "carrier_failure")
    assert _mark(fresh_db, "email", f" {b.upper()}@Example.com", "hard_bounce")
    assert _mark(fresh_db, "email", f"{c.lower()}@example.com", "hard_bounce")
    # the first evidence is kept
    assert not _mark(fresh_db, "phone", "+380671230001", "undelivered")
    assert table(fresh_db, "select address, evidence from ops.dead_contacts "
                           "where kind = 'phone' order by 1") == [
        ("+380671230001", "wrong_number"), ("+380671230002", "carrier_failure")]

    plan_day(fresh_db, RULES, D, SETTINGS)
    assert table(fresh_db, "select customer_id, channel from ops.outbox order by 1") == [
        (a, "email"), (c, "sms")]
    assert table(fresh_db, "select customer_id, reason from ops.skips "
                           "where phase = 'retention' order by 1") == [(b, "dead_contact")]


def test_claim_expires_a_row_whose_phone_died_after_planning(fresh_db: str):
    a, b = customer_ids(2, control=False)
    load_facts(fresh_db, [facts_row(a, days_until_end=20, phone="+380671230001"),
                          facts_row(b, days_until_end=20, phone="+380671230002")])
    assert plan_day(fresh_db, RULES, D, SETTINGS).inserted_messages == 2
    _mark(fresh_db, "phone", "+380671230002", "undelivered")
    with psycopg.connect(fresh_db) as conn:
        claimed = claim(conn, now=logical_now(D), lease=timedelta(minutes=5), limit=10,
                        plan_date=D)
    assert [m.customer_id for m in claimed] == [a]
    assert table(fresh_db, "select customer_id, status, last_error from ops.outbox "
                           "order by 1") == [(a, "claimed", None), (b, "expired", "dead_contact")]


def test_bad_evidence_and_kinds_are_refused(fresh_db: str):
    with pytest.raises(ValueError, match="expected one of hard_bounce"):
        _mark(fresh_db, "phone", "+380671230001", "busy")
    with pytest.raises(ValueError, match="expected one of phone, email"):
        normalize("fax", "+380671230001")
    with pytest.raises(ValueError, match="empty address"):
        _mark(fresh_db, "email", "  ", "hard_bounce")
    assert table(fresh_db, "select count(*) from ops.dead_contacts") == [(0,)]
