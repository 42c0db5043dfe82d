"""The synthetic club's contact decay: the curve from the dbt seed, and the simulation's
providers turning a message to a dead contact into the failure event that marks it dead."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from test_plan_dispatch import RULES, SETTINGS, D, customer_ids, facts_row, load_facts
from webhook_client import table

from lifecycle.data.decay import dead_share, is_dead
from lifecycle.insight.simulate import provider_outcomes
from lifecycle.planning.outbox import plan_day


@pytest.mark.parametrize(("years", "share"), [
    (0, 0.0), (1, 0.15), (2, 0.30), (2.99, 0.30), (3, 0.55), (4.99, 0.55), (5, 0.90), (9, 0.90),
])
def test_the_decay_curve_is_the_articles_from_the_seed(years, share):
    assert dead_share(years) == pytest.approx(share)


def _seed_where(wanted: list[tuple[str, str, float, bool]]) -> int:
    """A seed under which each (kind, address, years) is dead or not as wanted."""
    return next(s for s in range(1000)
                if all(is_dead(s, k, a, y) == dead for k, a, y, dead in wanted))


def test_a_message_to_a_decayed_contact_fails_marks_it_dead_and_the_next_plan_skips_it(fresh_db):
    old, new = customer_ids(2, control=False)
    old_phone, new_phone = "+380671230001", "+380671230002"
    old_email = f"{old.lower()}@example.com"
    created_old = datetime(D.year - 6, 1, 1, tzinfo=UTC)  # 6 years, never visited: 90%
    created_new = datetime.combine(D - timedelta(days=30), datetime.min.time(), UTC)
    seed = _seed_where([("phone", old_phone, 6.45, True), ("email", old_email, 6.45, False),
                        ("email", old_email, 6.44, False),
                        ("phone", new_phone, 30 / 365.25, False)])
    day = D - timedelta(days=8)  # outside the 7-day caps of the plan below
    with psycopg.connect(fresh_db) as conn:
        conn.execute("insert into raw.customers (customer_id, phone, email, created_at) values "
                     "(%s, %s, %s, %s), (%s, %s, null, %s)",
                     (old, old_phone, old_email, created_old, new, new_phone, created_new))
        # one message a customer a day: the old customer's email went the day before
        for i, (cid, channel, to, on) in enumerate([
                (old, "sms", old_phone, day), (old, "email", old_email, day - timedelta(days=1)),
                (new, "sms", new_phone, day)]):
            at = datetime.combine(on, datetime.min.time(), UTC) + timedelta(hours=9)
            conn.execute(
                "insert into ops.outbox (message_key, plan_date, customer_id, phase, step,"
                " cycle_key, channel, to_address, body, send_at, window_end_at, deadline_at,"
                " status, sent_at, handed_at) values (%s, %s, %s, 'stimulation', 1, 'M', %s, %s,"
                " 'Hi', %s, %s, %s, 'sent', %s, %s)",
                (f"k{i}", on, cid, channel, to, at, at, at, at, at))

    assert provider_outcomes(fresh_db, day - timedelta(days=1), seed, SETTINGS) == {
        "delivered": 1}
    assert provider_outcomes(fresh_db, day, seed, SETTINGS) == {
        "undelivered": 1, "delivered": 1}
    assert table(fresh_db, "select kind, address, evidence, source from ops.dead_contacts") == [
        ("phone", old_phone, "undelivered", "twilio")]
    assert table(fresh_db, "select channel, event_type, reason from ops.message_events "
                           "order by outbox_id") == [
        ("sms", "undelivered", "error 30005"), ("email", "delivered", None),
        ("sms", "delivered", None)]
    # run twice (a retried day): the same events, nothing new
    assert provider_outcomes(fresh_db, day, seed, SETTINGS) == {}

    # a later retention message to the old customer avoids the dead phone: email
    load_facts(fresh_db, [facts_row(old, phone=old_phone, email=old_email, days_until_end=20)])
    plan_day(fresh_db, RULES, D, SETTINGS)
    assert table(fresh_db, f"select customer_id, phase, channel from ops.outbox "
                           f"where plan_date = '{D}'") == [(old, "retention", "email")]
