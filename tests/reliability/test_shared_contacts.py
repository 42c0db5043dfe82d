"""Customer records sharing a phone (a family) or an email (a re-registration) get one message
per address per day: the rest are skipped ``shared_contact`` (or reached on an address of their
own), visibly in ``lifecycle outbox``, the preview and the day's report counts."""

from __future__ import annotations

from datetime import timedelta

import psycopg
from test_plan_dispatch import RULES, SETTINGS, D, customer_ids, facts_row, load_facts, phone_of

from lifecycle.delivery.dispatch import dispatch
from lifecycle.delivery.transports.sandbox import SandboxTransport
from lifecycle.insight.report import day_counts
from lifecycle.pipeline import logical_now, outbox_rows
from lifecycle.planning.outbox import plan_day
from lifecycle.planning.preview import preview

DAYS = 3
# Normalised as planning compares them: emails without case or spaces, phones by digits.
PER_ADDRESS = """
select plan_date, channel,
       case channel when 'sms' then regexp_replace(to_address, '[^0-9+]', '', 'g')
                    else lower(btrim(to_address)) end as address,
       count(*) as n
from ops.outbox group by 1, 2, 3
"""


def _club(ids: list[str], offset: int) -> list[dict]:
    """Every third customer shares the phone of the one before (families); every fourth
    registered again with the email of the one before, written differently. Half are in
    activation (priority 1), half in retention (priority 2), a day further on each day."""
    rows = []
    for i, cid in enumerate(ids):
        kw: dict = {"phone": phone_of(ids[i - 1] if i % 3 == 2 else cid)}
        if i % 3 == 2:  # a child on a parent's phone, no email of their own
            kw.update(email=None, email_valid=False, email_consent=False,
                      email_contactable=False)
        if i % 4 == 3:
            kw["email"] = f"  {ids[i - 1].upper()}@Example.COM "
        if i % 2:
            kw.update(days_since_purchase=21 + offset, days_until_end=100)  # activation
        else:
            kw.update(days_until_end=30 - offset)  # retention
        if i % 6 == 5:  # no SMS consent: email only
            kw.update(sms_consent=False, sms_contactable=False)
        rows.append(facts_row(cid, **kw))
    return rows


def test_one_message_per_address_per_day_across_customer_records(fresh_db):
    url = fresh_db
    ids = customer_ids(48, control=False)
    shared_skips = 0
    for offset in range(DAYS):
        day = D + timedelta(days=offset)
        load_facts(url, _club(ids, offset), as_of=day)
        would = preview(url, RULES, day, SETTINGS)
        report = plan_day(url, RULES, day, SETTINGS)
        skipped = report.skipped.get("shared_contact", 0)
        assert would.skipped.get("shared_contact", 0) == skipped
        assert day_counts(url, day)["skipped"].get("shared_contact", 0) == skipped
        listed = [r for r in outbox_rows(url, day) if r.get("reason") == "shared_contact"]
        assert len(listed) == skipped
        shared_skips += skipped
        dispatch(url, SandboxTransport(url), now=logical_now(day), plan_date=day,
                 settings=SETTINGS)
    with psycopg.connect(url) as conn:
        per_address = conn.execute(PER_ADDRESS).fetchall()
        sent = conn.execute(
            "select o.plan_date, s.channel, lower(btrim(s.to_address)), count(*) "
            "from ops.sandbox_messages s join ops.outbox o using (outbox_id) group by 1, 2, 3"
        ).fetchall()
    # who lost an address on D (and has no other) gets it the next day
    assert {d for d, *_ in per_address} == {D, D + timedelta(days=1)}
    assert max(n for *_, n in per_address) == 1
    assert max(n for *_, n in sent) == 1
    assert shared_skips > 0


def test_the_higher_priority_message_wins_then_the_lower_customer_id(fresh_db):
    url = fresh_db
    a, b, c, d = customer_ids(4, control=False)
    family = phone_of(a)
    rows = [
        # retention (priority 2) and activation (priority 1) on one phone, no email consent
        facts_row(a, phone=family, days_until_end=30, email_consent=False,
                  email_contactable=False),
        facts_row(b, phone=family, days_since_purchase=22, days_until_end=100,
                  email_consent=False, email_contactable=False),
        # both in retention on one email, no phone: the lower customer id gets it
        facts_row(c, email="same@example.com", days_until_end=30, phone=None,
                  phone_valid=False, sms_contactable=False),
        facts_row(d, email="Same@Example.com", days_until_end=30, phone=None,
                  phone_valid=False, sms_contactable=False),
    ]
    load_facts(url, rows)
    plan_day(url, RULES, D, SETTINGS)

    def day_rows() -> dict:
        return {r["customer_id"]: (r["phase"], r.get("channel") or r["reason"])
                for r in outbox_rows(url, D)}

    assert day_rows() == {a: ("retention", "shared_contact"), b: ("activation", "sms"),
                          c: ("retention", "email"), d: ("retention", "shared_contact")}
    # A record added later the same day (a rerun) finds the address taken by D's outbox,
    # even with a higher-priority message; the rest of the day stays as it was.
    (e,) = [x for x in customer_ids(5, control=False) if x not in (a, b, c, d)]
    load_facts(url, rows + [facts_row(e, phone=family, days_since_purchase=22,
                                      days_until_end=100, email="same@example.com")])
    again = plan_day(url, RULES, D, SETTINGS)
    assert again.inserted_messages == 0 and again.skipped["shared_contact"] == 3
    assert day_rows() == {a: ("retention", "shared_contact"), b: ("activation", "sms"),
                          c: ("retention", "email"), d: ("retention", "shared_contact"),
                          e: ("activation", "shared_contact")}
