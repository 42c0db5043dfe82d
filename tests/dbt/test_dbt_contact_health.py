"""contact_health and metrics_contact_health built by the real dbt on hand-written rows: the
confirmations, the dead contacts and the shares by age since the last confirmation."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import psycopg
import pytest

from lifecycle.contacts import mark_dead
from lifecycle.delivery.webhooks.events import Event, write_events
from lifecycle.settings import get_settings
from lifecycle.transform.dbt import run_dbt

pytestmark = pytest.mark.slow

D = date(2026, 6, 1)
# the marts and what they read, with only the tests all of whose parents are built
BUILD = ["build", "--select", "+metrics_contact_health", "--indirect-selection", "buildable"]


def _customers(url: str, rows: list[tuple[str, str, str | None, str | None]]) -> None:
    """(customer_id, created_at, contact_updated_at, phone); email <id>@example.com."""
    with psycopg.connect(url) as conn:
        for cid, created, updated, phone in rows:
            conn.execute(
                "insert into raw.customers (customer_id, email, phone, timezone, created_at,"
                " contact_updated_at) values (%s, %s, %s, 'Europe/Kyiv', %s, %s)",
                (cid, f"{cid}@example.com", phone, created, updated),
            )


def _shares(url: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "select contact_kind, age_bucket, contacts, dead_contacts, unconfirmed_contacts,"
            " dead_share, unconfirmed_share, reference_dead_share_low"
            " from analytics.metrics_contact_health order by contact_kind, bucket_order"
        ).fetchall()


def test_the_shares_by_age_since_confirmation_on_a_hand_built_base(fresh_db, tmp_path):
    # Ten customers with a phone each and an email each; ages by D = 2026-06-01.
    _customers(fresh_db, [
        ("new1", "2026-03-01 10:00+03", None, "+380670000001"),        # phone alive
        ("new2", "2025-01-15 10:00+03", None, "+380670000002"),        # unconfirmed, < 2 y
        ("two1", "2024-01-01 10:00+03", None, "+380670000003"),        # 2-3 y, dead below
        ("two2", "2023-12-01 10:00+03", None, "+380670000004"),        # 2-3 y
        ("two3", "2018-01-01 10:00+03", "2024-05-01", "+380670000005"),  # updated: 2-3 y
        ("old1", "2022-01-01 10:00+03", None, "+380670000006"),        # 3-5 y, dead
        ("old2", "2021-09-01 10:00+03", None, "+380670000007"),        # 3-5 y
        ("anc1", "2019-01-01 10:00+03", None, "+380670000008"),        # 5+ y, dead
        ("anc2", "2019-01-01 10:00+03", None, "+380670000009"),        # 5+ y, dead
        # 5+ y by its record, but a reply last month confirms the phone
        ("anc3", "2019-01-01 10:00+03", None, "+380670000010"),
    ])
    seen = datetime(2026, 5, 20, 9, tzinfo=UTC)
    with psycopg.connect(fresh_db) as conn:
        for phone, evidence in [("+380670000003", "undelivered"),
                                ("+380670000006", "wrong_number"),
                                ("+380670000008", "carrier_failure"),
                                ("+380670000009", "undelivered")]:
            mark_dead(conn, "phone", phone, evidence, seen, "test")
        mark_dead(conn, "email", "anc1@example.com", "hard_bounce", seen, "test")
        # a death observed after D does not count yet
        mark_dead(conn, "email", "old1@example.com", "hard_bounce",
                  datetime(2026, 6, 3, tzinfo=UTC), "test")
    write_events(fresh_db, [Event(
        provider="twilio", channel="sms", event_type="inbound", occurred_at=seen,
        dedupe_key="in-anc3", address="+380670000010")])

    run_dbt(fresh_db, BUILD, as_of=D, settings=get_settings(), target_path=tmp_path)

    with psycopg.connect(fresh_db) as conn:
        health = dict(((c, k), (b, s, by)) for c, k, b, s, by in conn.execute(
            "select customer_id, contact_kind, age_bucket, status, last_confirmed_by"
            " from analytics.contact_health").fetchall())
    assert len(health) == 20
    assert health[("new1", "phone")] == ("under_2", "alive", "created")
    assert health[("two3", "phone")] == ("2_to_3", "unconfirmed", "contact_updated")
    assert health[("anc3", "phone")] == ("under_2", "alive", "reply")
    assert health[("anc1", "email")] == ("5_plus", "dead", "created")
    assert health[("old1", "email")] == ("3_to_5", "unconfirmed", "created")

    # by hand: phones under 2 y: new1 alive, new2 unconfirmed, anc3 alive -> 0 dead, 1/3 unc.;
    # 2-3 y: two1 dead, two2, two3 unconfirmed -> 1/3 dead, 2/3 unconfirmed;
    # 3-5 y: old1 dead, old2 -> 1/2, 1/2; 5+ y: anc1, anc2 dead -> 1, 0.
    # emails: anc3's email is not confirmed by the SMS reply: 5+ y has anc1 (dead), anc2, anc3.
    q = Decimal
    assert _shares(fresh_db) == [
        ("email", "under_2", 2, 0, 1, q("0.0000"), q("0.5000"), None),
        ("email", "2_to_3", 3, 0, 3, q("0.0000"), q("1.0000"), q("0.3000")),
        ("email", "3_to_5", 2, 0, 2, q("0.0000"), q("1.0000"), q("0.5000")),
        ("email", "5_plus", 3, 1, 2, q("0.3333"), q("0.6667"), q("0.9000")),
        ("phone", "under_2", 3, 0, 1, q("0.0000"), q("0.3333"), None),
        ("phone", "2_to_3", 3, 1, 2, q("0.3333"), q("0.6667"), q("0.3000")),
        ("phone", "3_to_5", 2, 1, 1, q("0.5000"), q("0.5000"), q("0.5000")),
        ("phone", "5_plus", 2, 2, 0, q("1.0000"), q("0.0000"), q("0.9000")),
    ]
