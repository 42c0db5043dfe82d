"""Keep-alive (policy.keep_alive): one low-key message to a customer nobody has touched for a
year, planned by the real planner on real PostgreSQL, after every phase and within the rules."""

from __future__ import annotations

from datetime import timedelta

import psycopg
from test_plan_dispatch import RULES, SETTINGS, D, customer_ids, facts_row, load_facts, rules_with
from webhook_client import table

from lifecycle.contacts import mark_dead
from lifecycle.pipeline import logical_now
from lifecycle.planning.outbox import plan_day
from lifecycle.rules.loading import parse_rules

YEAR_AGO = D - timedelta(days=365)
# a customer in no phase: active member, mid-membership, a year or more on the books
QUIET = {"days_since_purchase": 200, "days_until_end": 165}


def _sent(url: str, customer: str, day, channel: str = "sms") -> None:
    """A message the customer got on ``day`` (handed to the provider)."""
    with psycopg.connect(url) as conn:
        conn.execute(
            "insert into ops.outbox (message_key, plan_date, customer_id, phase, step, cycle_key,"
            " channel, to_address, body, send_at, window_end_at, deadline_at, status, handed_at)"
            " values (%s, %s, %s, 'stimulation', 1, 'M', %s, '+380670000000', 'Hi', %s, %s, %s,"
            " 'sent', %s)",
            (f"old-{customer}-{day}", day, customer, channel, logical_now(day),
             logical_now(day) + timedelta(hours=8), logical_now(day) + timedelta(hours=20),
             logical_now(day)),
        )


def _confirmed(url: str, rows: list[tuple[str, str, object]]) -> None:
    """analytics.contact_health as dbt builds it, reduced to what planning reads."""
    with psycopg.connect(url) as conn:
        conn.execute("create table analytics.contact_health (customer_id text, contact_kind "
                     "text, last_confirmed_on date)")
        conn.cursor().executemany("insert into analytics.contact_health values (%s, %s, %s)",
                                  rows)


def test_keep_alive_plans_for_a_contact_untouched_for_a_year_and_not_one_touched_last_month(
        fresh_db):
    untouched, messaged, confirmed, newcomer, in_phase, dead = customer_ids(6, control=False)
    (held,) = customer_ids(1, control=True)
    long_ago = D - timedelta(days=900)
    load_facts(fresh_db, [
        facts_row(untouched, customer_since=long_ago, **QUIET),
        facts_row(messaged, customer_since=long_ago, **QUIET),
        facts_row(confirmed, customer_since=long_ago, **QUIET),
        # on the books for 364 days only: not a year yet
        facts_row(newcomer, customer_since=YEAR_AGO + timedelta(days=1), **QUIET),
        # in retention today: the phase wins the day, keep-alive waits
        facts_row(in_phase, customer_since=long_ago, days_until_end=20),
        # both contacts dead: nobody to keep alive
        facts_row(dead, customer_since=long_ago, **QUIET),
        facts_row(held, customer_since=long_ago, **QUIET),
    ])
    _sent(fresh_db, messaged, D - timedelta(days=30))
    # exactly a year since its last message: due again
    _sent(fresh_db, untouched, YEAR_AGO)
    _confirmed(fresh_db, [(confirmed, "email", D - timedelta(days=20)),
                          (confirmed, "phone", D - timedelta(days=800))])
    with psycopg.connect(fresh_db) as conn:
        row = conn.execute("select phone, email from analytics.customer_facts "
                           "where customer_id = %s", (dead,)).fetchone()
        mark_dead(conn, "phone", row[0], "wrong_number", logical_now(D), "test")
        mark_dead(conn, "email", row[1], "hard_bounce", logical_now(D), "test")

    report = plan_day(fresh_db, RULES, D, SETTINGS)

    assert table(fresh_db, "select customer_id, phase, channel, offer_code from ops.outbox "
                           f"where plan_date = '{D}' order by phase, customer_id") == [
        (untouched, "keep_alive", "email", "keep_in_touch"),
        (in_phase, "retention", "sms", "renew_discount"),
    ]
    assert table(fresh_db, "select customer_id, phase, reason, channel from ops.skips "
                           "order by customer_id") == sorted([
        (held, "keep_alive", "control_group", "email"),
        (in_phase, "keep_alive", "lower_priority", None),
    ])
    assert report.planned[("keep_alive", "email")] == 1

    # planned again the same day: nothing new; the next day it is touched (its message is live)
    assert plan_day(fresh_db, RULES, D, SETTINGS).inserted_messages == 0
    load_facts(fresh_db, [facts_row(untouched, customer_since=long_ago, **QUIET)],
               as_of=D + timedelta(days=1))
    assert plan_day(fresh_db, RULES, D + timedelta(days=1), SETTINGS).inserted_messages == 0


def test_keep_alive_is_one_message_per_period_and_within_the_daily_quota(fresh_db):
    ids = customer_ids(3, control=False)
    load_facts(fresh_db, [facts_row(c, customer_since=D - timedelta(days=400 + i), **QUIET)
                          for i, c in enumerate(ids)])
    rules = rules_with(("    max_per_day: 100\n", "    max_per_day: 2\n"))
    plan_day(fresh_db, rules, D, SETTINGS)
    # the longest untouched first: the two oldest customers
    assert table(fresh_db, "select customer_id from ops.outbox order by 1") == sorted(
        [(ids[2],), (ids[1],)])
    # its message key is per period: the same customer in the same period holds its key
    with psycopg.connect(fresh_db) as conn:
        conn.execute("update ops.outbox set status = 'expired', handed_at = now()")
    load_facts(fresh_db, [facts_row(c, customer_since=D - timedelta(days=400 + i), **QUIET)
                          for i, c in enumerate(ids)], as_of=D + timedelta(days=1))
    plan_day(fresh_db, rules, D + timedelta(days=1), SETTINGS)
    assert table(fresh_db, "select customer_id, plan_date from ops.outbox "
                           f"where plan_date > '{D}'") == [(ids[0], D + timedelta(days=1))]


def test_without_keep_alive_in_the_rules_nothing_is_planned(fresh_db):
    (c,) = customer_ids(1, control=False)
    load_facts(fresh_db, [facts_row(c, customer_since=D - timedelta(days=900), **QUIET)])
    text = RULES.source
    start = text.index("  keep_alive:")
    end = text.index("\nphases:")
    rules = parse_rules(text[:start] + text[end + 1:], "no-keep-alive.yml")
    assert rules.keep_alive is None
    assert plan_day(fresh_db, rules, D, SETTINGS).inserted_messages == 0
