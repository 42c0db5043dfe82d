"""Fenced claims: a dispatcher whose claim lapsed sends nothing of it, whatever made it lapse.

Real dispatcher processes (the real twilio/sendgrid SDKs against the stand-in provider), real
signals (SIGSTOP/SIGCONT/SIGKILL) and the real PostgreSQL. What counts is what the stand-in
accepted: the messages a customer would have received.
"""

from __future__ import annotations

import random
import signal
import time
from collections import Counter
from datetime import UTC, date, datetime, timedelta

import psycopg
import pytest
from dispatchers import (
    accepted_ids,
    finish,
    plan_rows,
    start,
    statuses,
    wait_until,
)

from lifecycle.delivery.standin import StandinServer

pytestmark = pytest.mark.slow

D = date(2026, 6, 1)
T0 = datetime(2026, 6, 1, 10, tzinfo=UTC)


def test_a_dispatcher_frozen_past_its_lease_sends_nothing_of_its_claim(fresh_db):
    """SIGSTOP one dispatcher for three leases while another drains the outbox, then resume."""
    lease = 2
    n = 150
    now = datetime.now(UTC)
    plan_rows(fresh_db, n, day=now.date(), send_at=now - timedelta(minutes=1))
    # 30 segments/s shared: each holds a batch and the next one claimed while it sends
    settings = {"dispatch_lease_seconds": lease, "twilio_segments_per_s": 30.0,
                "dispatch_batch_size": 20, "provider_timeout_s": 5}
    with StandinServer() as server:
        settings["standin_url"] = server.url
        server.provider.configure(latency_ms=20)
        frozen = start(fresh_db, settings, "wall")
        assert wait_until(lambda: len(accepted_ids(server)) >= 5), "the first never sent"
        frozen.send_signal(signal.SIGSTOP)
        stopped_at = len(accepted_ids(server))
        time.sleep(3 * lease)  # its leases lapse: nobody keeps them alive
        other = finish(start(fresh_db, settings, "wall"))
        frozen.send_signal(signal.SIGCONT)
        woke = finish(frozen)
        accepted = accepted_ids(server)
    dupes = {i: c for i, c in Counter(accepted).items() if c > 1}
    assert not dupes, f"{len(dupes)} messages went out twice"
    # the other dispatcher took over the frozen one's lapsed claims
    assert other["lease_lost"] + other["claimed"] > 0 and other["claimed"] > 0
    # the frozen one really held rows it no longer owned when it woke, and sent none of them
    assert woke["outcomes"].get("not_handed", 0) > 0, woke
    assert stopped_at < n
    final = statuses(fresh_db)
    assert set(final.values()) <= {"sent", "unknown"}
    assert {i for i, s in final.items() if s == "sent"} <= set(accepted)


def test_a_dispatcher_frozen_inside_a_transaction_does_not_hold_up_the_one_taking_over(
        fresh_db):
    """Frozen between a statement and its commit (here: stamping a hand-over), a dispatcher
    holds its rows' locks for as long as it is frozen. The next dispatcher settles every lapsed
    claim it can lock and sends what is due without waiting for it; the frozen one's rows are
    settled by the run after it, once its transaction has ended, and nothing goes out twice."""
    n = 30
    now = datetime.now(UTC)
    plan_rows(fresh_db, n, day=now.date(), send_at=now - timedelta(minutes=1))
    ids = sorted(statuses(fresh_db))
    handed, unhanded = ids[:6], ids[6:12]  # batch 999's claims, lapsed a minute ago
    with psycopg.connect(fresh_db) as conn:
        conn.execute("update ops.outbox set status = 'claimed', batch_id = 999, "
                     "lease_until = now() - interval '1 minute' where outbox_id = any(%s)",
                     (handed + unhanded,))
        conn.execute("update ops.outbox set handed_at = now() - interval '2 minutes' "
                     "where outbox_id = any(%s)", (handed,))
    settings = {"dispatch_lease_seconds": 2, "twilio_segments_per_s": 100.0,
                "provider_timeout_s": 5}
    frozen = psycopg.connect(fresh_db)  # the frozen dispatcher's hand-over, not committed
    try:
        frozen.execute("update ops.outbox set handed_at = now() where outbox_id = any(%s)",
                       ([handed[0], unhanded[0], unhanded[1]],))
        with StandinServer() as server:
            settings["standin_url"] = server.url
            first = finish(start(fresh_db, settings, "wall"), timeout=60)
            after_first = statuses(fresh_db)
            frozen.rollback()  # it dies: its transaction ends with its session
            second = finish(start(fresh_db, settings, "wall"), timeout=60)
            accepted = accepted_ids(server)
    finally:
        frozen.close()
    locked = {handed[0], unhanded[0], unhanded[1]}
    # the first run left the locked rows as they were and settled the rest
    assert {after_first[i] for i in locked} == {"claimed"}
    assert first["lease_lost"] == len(handed) - 1
    assert set(accepted[:first["claimed"]]) == set(ids) - set(handed) - locked
    # the second settled them: one handed over (unknown), two never handed (sent now)
    assert second["lease_lost"] == 1 and second["claimed"] == 2
    assert not _dupes(accepted)
    final = statuses(fresh_db)
    assert {i for i, s in final.items() if s == "unknown"} == set(handed)
    assert {i for i, s in final.items() if s == "sent"} == set(ids) - set(handed)
    assert sorted(accepted) == sorted(set(ids) - set(handed))


def test_reconciliation_leaves_a_frozen_dispatchers_rows_and_settles_the_rest(fresh_db):
    """A dispatcher frozen while recording outcomes holds locks on unknown rows (lease-lost
    rows it answers for): reconciliation settles every other unknown row without waiting,
    reports the held one as still unknown, and settles it on a run after the lock ends."""
    import threading

    from lifecycle.delivery.reconcile import reconcile
    from lifecycle.settings import Settings

    now = datetime.now(UTC)
    plan_rows(fresh_db, 4, day=now.date(), send_at=now - timedelta(hours=2))
    held, seen, old, fresh = sorted(statuses(fresh_db))
    with psycopg.connect(fresh_db) as conn:
        conn.execute("update ops.outbox set status = 'unknown', handed_at = now(), "
                     "updated_at = now() - interval '1 hour'")
        conn.execute("update ops.outbox set updated_at = now() - interval '3 days' "
                     "where outbox_id = %s", (old,))
        for i in (held, seen):
            conn.execute("insert into ops.message_events (provider, channel, event_type, "
                         "outbox_id, occurred_at, dedupe_key) values ('twilio', 'sms', "
                         "'delivered', %s, now(), %s)", (i, f"e{i}"))
    frozen = psycopg.connect(fresh_db)
    try:
        frozen.execute("update ops.outbox set last_error = last_error where outbox_id = %s",
                       (held,))
        done: list = []
        run = threading.Thread(target=lambda: done.append(
            reconcile(fresh_db, now=datetime.now(UTC), settings=Settings())), daemon=True)
        run.start()
        run.join(timeout=60)
        assert done, "reconciliation waited for the frozen dispatcher's lock"
        first = done[0]
        after_first = statuses(fresh_db)
    finally:
        frozen.rollback()
        frozen.close()
    assert (after_first[held], after_first[seen]) == ("unknown", "sent")
    assert (after_first[old], after_first[fresh]) == ("expired", "unknown")
    assert {u.outbox_id for u in first.unresolved} == {held, fresh}
    second = reconcile(fresh_db, now=datetime.now(UTC), settings=Settings())
    assert second.sent == 1 and statuses(fresh_db)[held] == "sent"


def test_eight_dispatchers_on_one_low_rate_with_a_short_lease(fresh_db):
    """A slow shared rate, long texts (2 segments) and a 2 s lease: batches wait for the rate
    longer than the lease unless their leases are kept alive and their size counts segments;
    each dispatcher that joins later settles the lapsed claims it finds."""
    n = 240
    now = datetime.now(UTC)
    # 170 GSM-7 characters: 2 segments each
    plan_rows(fresh_db, n, day=now.date(), send_at=now - timedelta(minutes=1),
              body="Message {i:04d} " + "x" * 155)
    settings = {"dispatch_lease_seconds": 2, "twilio_segments_per_s": 60.0,
                "dispatch_batch_size": 20, "dispatch_batch_s": 30.0, "provider_timeout_s": 5}
    with StandinServer() as server:
        settings["standin_url"] = server.url
        server.provider.configure(latency_ms=30)
        procs = []
        for _ in range(8):  # one joins every second, as scheduled dispatchers do
            procs.append(start(fresh_db, settings, "wall"))
            time.sleep(1.0)
        reports = [finish(p) for p in procs]
        accepted = accepted_ids(server)
    dupes = {i: c for i, c in Counter(accepted).items() if c > 1}
    assert not dupes, f"{len(dupes)} messages went out twice"
    final = statuses(fresh_db)
    assert Counter(final.values()) == {"sent": n}, Counter(final.values())
    assert len(set(accepted)) == n
    assert sum(r["claimed"] for r in reports) >= n
    assert sum(1 for r in reports if r["claimed"]) > 1, "one dispatcher did all the work"


def test_fifty_kills_over_a_day_with_provider_faults(fresh_db):
    """50+ SIGKILLs at random points while the provider answers 429/5xx, times out and cuts
    connections: no message twice, every row accounted for, and each kill strands (leaves
    unknown without the provider having taken it) at most the rows of its requests in flight."""
    from lifecycle.delivery.leases import LEASE_LOST, expire_and_recover

    rng = random.Random(7)
    n = 3000
    plan_rows(fresh_db, n, day=D, send_at=T0, email_every=10)
    sms_requests, email_requests, email_rows = 4, 2, 20
    settings = {"dispatch_lease_seconds": 300, "twilio_segments_per_s": 150.0,
                "sendgrid_requests_per_s": 10.0, "provider_timeout_s": 1,
                "twilio_concurrency": sms_requests, "sendgrid_concurrency": email_requests,
                "dispatch_batch_size": 200, "dispatch_email_batch_size": email_rows}
    in_flight = sms_requests + email_requests * email_rows
    kills, stranded = 0, []
    now = T0
    with StandinServer() as server:
        settings["standin_url"] = server.url
        server.provider.configure(latency_ms=10, error_429=0.03, error_500=0.02,
                                  error_503=0.02, error_500_after_accept=0.01,
                                  drop_before_accept=0.01, cut_after_accept=0.01,
                                  slow_after_accept=0.01, slow_ms=1500, seed=11)
        while kills < 52 and "planned" in statuses(fresh_db).values():
            before = len(accepted_ids(server))
            proc = start(fresh_db, settings, now.isoformat())
            wait_until(lambda p=proc, b=before: len(accepted_ids(server)) > b
                       or p.poll() is not None, timeout=60)
            time.sleep(rng.uniform(0.0, 0.4))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
            now += timedelta(seconds=301)  # the killed one's leases lapse
            with psycopg.connect(fresh_db) as conn:
                held = {r[0] for r in conn.execute(
                    "select outbox_id from ops.outbox where status = 'claimed' "
                    "and handed_at is not null")}
                expire_and_recover(conn, now)
                conn.commit()
            stranded.append(len(held - set(accepted_ids(server))))
        # the rest goes out with no more kills (retries back off: the clock moves on)
        for _ in range(6):
            now += timedelta(hours=1)
            finish(start(fresh_db, settings, now.isoformat()))
        accepted = accepted_ids(server)
    assert kills >= 50, f"only {kills} kills: the outbox drained first"
    assert not _dupes(accepted), f"{len(_dupes(accepted))} messages went out twice"
    final = statuses(fresh_db)
    assert len(final) == n
    counts = Counter(final.values())
    assert set(counts) <= {"sent", "failed", "unknown"}, counts
    # sent means accepted: nothing is called sent that the provider did not take
    assert {i for i, s in final.items() if s == "sent"} <= set(accepted)
    assert max(stranded) <= in_flight, stranded
    # Unknown rows are the kills' (requests in flight, or answered and not yet recorded:
    # reconciliation settles those) and the provider's ambiguous answers; every other row was
    # delivered or certainly refused.
    delivered = set(accepted)
    with psycopg.connect(fresh_db) as conn:
        lost = {r[0] for r in conn.execute(
            "select outbox_id from ops.outbox where status = 'unknown' and last_error = %s",
            (LEASE_LOST,))}
    assert len(lost - delivered) == sum(stranded), "rows stranded other than by the kills"
    assert len(delivered) > n * 0.9, (len(delivered), counts)


def test_the_logical_clock_recovers_a_killed_replay_and_keeps_far_east_rows(fresh_db):
    """A replay (`--clock logical`) killed mid-drain is recovered by the next replay once its
    leases lapse on the wall clock; rows of a UTC+13 customer, whose send window closes before
    the replay's clock (the day's end in UTC), are sent, not expired."""
    n = 120
    # Pacific/Tongatapu (UTC+13): 09:00-21:00 local is 20:00 the day before to 08:00 UTC
    plan_rows(fresh_db, n, day=D, send_at=datetime(2026, 5, 31, 20, tzinfo=UTC),
              window=timedelta(hours=12), deadline=timedelta(hours=12))
    settings = {"dispatch_lease_seconds": 2, "twilio_segments_per_s": 40.0,
                "provider_timeout_s": 5}
    with StandinServer() as server:
        settings["standin_url"] = server.url
        server.provider.configure(latency_ms=20)
        proc = start(fresh_db, settings, f"logical:{D}")
        assert wait_until(lambda: len(accepted_ids(server)) >= 10), "the replay never sent"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        held = Counter(statuses(fresh_db).values())["claimed"]
        time.sleep(3)  # the killed replay's leases lapse (wall clock)
        rerun = finish(start(fresh_db, settings, f"logical:{D}"))
        accepted = accepted_ids(server)
    assert held > 0, "the kill landed after the replay had finished: nothing was proved"
    assert not _dupes(accepted)
    final = Counter(statuses(fresh_db).values())
    assert final["claimed"] == 0 and final["expired"] == 0 and final["planned"] == 0, final
    assert final["sent"] + final["unknown"] == n
    assert rerun["lease_lost"] == final["unknown"]
    assert final["unknown"] <= 100  # at most the killed one's requests in flight


def _dupes(accepted: list[int]) -> dict[int, int]:
    return {i: c for i, c in Counter(accepted).items() if c > 1}
