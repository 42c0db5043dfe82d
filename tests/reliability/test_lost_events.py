"""A day sent through the stand-in with the real SDKs, where answers get lost: the rows end
``unknown``. Reconciliation asks Twilio (the stand-in's Messages list, through the real SDK) and
finds what it accepted; the rest expires at the deadline. Then seven more days are planned: no
step whose message may have reached the provider is ever planned again.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from test_plan_dispatch import RULES, SETTINGS, D, customer_ids, facts_row, load_facts

from lifecycle.delivery.dispatch import dispatch
from lifecycle.delivery.reconcile import reconcile
from lifecycle.delivery.standin import Faults, StandinProvider, StandinServer
from lifecycle.delivery.transports import get_transport
from lifecycle.pipeline import logical_now
from lifecycle.planning.outbox import plan_day
from lifecycle.settings import Settings

N = 40


def _facts(ids: list[str], day_offset: int) -> list[dict]:
    # retention (days_until_end 14..45) every day of the test, the same membership
    return [facts_row(c, days_until_end=30 - day_offset) for c in ids]


def _rows(url: str, sql: str, *params) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, params).fetchall()


def test_lost_answers_are_asked_for_expire_at_the_deadline_and_keys_stay_taken(fresh_db):
    url = fresh_db
    ids = customer_ids(N + 1, control=False)
    ids, never_handed = ids[:N], ids[N]
    load_facts(url, _facts(ids + [never_handed], 0))
    assert plan_day(url, RULES, D, SETTINGS).inserted_messages == N + 1
    # One row expires before it is ever handed over (certainly not sent): its key is released.
    with psycopg.connect(url) as conn:
        conn.execute("update ops.outbox set status = 'expired', last_error = 'deadline passed "
                     "before sending' where customer_id = %s", (never_handed,))
    faults = Faults(cut_after_accept=0.2, drop_before_accept=0.2, seed=11)
    with StandinServer(StandinProvider(faults)) as server:
        standin = Settings(transport="standin", standin_url=server.url)
        handed = datetime.now(UTC)
        transport = get_transport("standin", url, standin)
        try:
            report = dispatch(url, transport, now=logical_now(D), plan_date=D, settings=standin,
                              throttles={})
        finally:
            transport.close()
        assert report.claimed == N
        sids = {int(a.outbox_id): a.message_id for a in server.provider.accepted}
        with psycopg.connect(url) as conn:
            # every row went into a provider request: stamped handed over (as dispatch does)
            conn.execute("update ops.outbox set handed_at = coalesce(handed_at, %s) "
                         "where status in ('sent', 'unknown')", (handed,))
            # five accepted messages whose answers are lost on the way back
            lost = [r[0] for r in conn.execute(
                "select outbox_id from ops.outbox where status = 'sent' order by outbox_id "
                "limit 5")]
            conn.execute("update ops.outbox set status = 'unknown', provider_id = null, "
                         "sent_at = null, last_error = 'ReadTimeout' where outbox_id = any(%s)",
                         (lost,))
        unknown = {r[0] for r in _rows(url, "select outbox_id from ops.outbox "
                                            "where status = 'unknown'")}
        accepted_unknown = {i for i in unknown if i in sids}
        never_accepted = unknown - accepted_unknown
        assert len(accepted_unknown) > 5 and never_accepted  # cut after accept, dropped before
        assert set(lost) <= accepted_unknown

        # The sandbox cannot ask: nothing changes, and the provider is not asked.
        soon = datetime.now(UTC) + timedelta(hours=1)
        sandbox = Settings(transport="sandbox", standin_url=server.url)
        assert reconcile(url, now=soon, settings=sandbox).sent == 0
        assert server.provider.list_requests == 0

        asked = reconcile(url, now=soon, settings=standin)
        assert (asked.asked, asked.found_by_asking, asked.sent) == (
            len(unknown), len(accepted_unknown), len(accepted_unknown))
        assert server.provider.list_requests == len(unknown)  # one number each
        resolved = dict(_rows(url, "select outbox_id, provider_id from ops.outbox "
                                   "where outbox_id = any(%s)", list(unknown)))
        assert {i: resolved[i] for i in accepted_unknown} == {i: sids[i] for i in accepted_unknown}
        assert {i for i, pid in resolved.items() if pid is None} == never_accepted
        assert [u.outbox_id for u in asked.unresolved] == sorted(never_accepted)

        # Twilio knows nothing of the others: at the deadline they expire, keys still taken.
        later = datetime.now(UTC) + timedelta(hours=49)
        expired = reconcile(url, now=later, settings=standin)
        assert (expired.expired, expired.found_by_asking) == (len(never_accepted), 0)
    assert _rows(url, "select status, count(*), count(handed_at) from ops.outbox "
                      "where outbox_id = any(%s) group by 1", list(never_accepted)) == [
        ("expired", len(never_accepted), len(never_accepted))]

    # Seven more days: the same customers stay in retention with the same membership.
    for offset in range(1, 8):
        day = D + timedelta(days=offset)
        load_facts(url, _facts(ids + [never_handed], offset), as_of=day)
        plan = plan_day(url, RULES, day, SETTINGS)
        assert plan.eligible[("retention", 1)] == N + 1
        if offset == 1:  # the step that certainly never went out is planned again, once
            assert plan.inserted_messages == 1 and plan.skipped == {"already_sent": N}
        else:
            assert plan.inserted_messages == 0 and plan.skipped == {"already_sent": N + 1}
    # one row per key, but for the step released by the row that never went out
    assert _rows(url, "select customer_id, count(*) from ops.outbox group by message_key, "
                      "customer_id having count(*) > 1") == [(never_handed, 2)]
    planned_again = _rows(url, "select customer_id from ops.outbox where plan_date > %s", D)
    assert planned_again == [(never_handed,)]


def test_the_database_refuses_a_second_row_for_a_key_that_reached_the_provider(fresh_db):
    url = fresh_db
    (cid,) = customer_ids(1, control=False)
    load_facts(url, [facts_row(cid, days_until_end=30)])
    plan_day(url, RULES, D, SETTINGS)
    with psycopg.connect(url) as conn:
        # handed over, answer lost, expired by reconciliation: it may have been sent
        conn.execute("update ops.outbox set status = 'expired', handed_at = now(), "
                     "last_error = 'reconciled: no provider event within 48 h'")
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute("insert into ops.outbox (message_key, plan_date, customer_id, phase, "
                         "step, cycle_key, channel, to_address, body, send_at, window_end_at, "
                         "deadline_at) select message_key, plan_date + 1, customer_id, phase, "
                         "step, cycle_key, channel, to_address, body, send_at, window_end_at, "
                         "deadline_at from ops.outbox")
