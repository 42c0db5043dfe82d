"""Dispatch via the real SDKs to a faulty stand-in provider: never twice, never lost silently."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, timedelta

import psycopg
import pytest

from lifecycle.delivery.dispatch import dispatch
from lifecycle.delivery.standin import StandinServer
from lifecycle.delivery.transports import get_transport
from lifecycle.settings import Settings

D = date(2026, 6, 1)
T0 = datetime(2026, 6, 1, 10, tzinfo=UTC)


def _plan_rows(url: str, n: int) -> None:
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        cur.executemany(
            "insert into ops.outbox (message_key, plan_date, customer_id, phase, step, cycle_key,"
            " channel, to_address, subject, body, send_at, window_end_at, deadline_at) values"
            " (%s, %s, %s, 'activation', 1, 'M', %s, %s, %s, %s, %s, %s, %s)",
            [
                (f"k{i}", D, f"C{i}", ch, to, subj, f"Hi {i}", T0, T0 + timedelta(hours=10),
                 T0 + timedelta(hours=24))
                for i in range(n)
                for ch, to, subj in [("sms", f"+38067{i:07d}", None)
                                     if i % 2 else ("email", f"c{i}@example.com", "Hello")]
            ],
        )


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_faulty_provider_never_gets_a_message_twice(fresh_db, seed):
    _plan_rows(fresh_db, 200)
    with StandinServer() as server:
        server.provider.configure(seed=seed, error_429=0.15, error_503=0.05,
                                  cut_after_accept=0.05, error_500_after_accept=0.05,
                                  slow_after_accept=0.03, slow_ms=2000)
        settings = Settings(transport="standin", standin_url=server.url, provider_timeout_s=1.0,
                            dispatch_batch_size=37)
        transport = get_transport("standin", fresh_db, settings)
        now = T0
        for _ in range(12):  # retries come due after their backoff: move the clock on
            # unthrottled: this test is about faults (the rate limit has its own tests)
            dispatch(fresh_db, transport, now=now, settings=settings, throttles={})
            now += timedelta(minutes=40)
        transport.close()
        accepted = Counter(a.outbox_id for a in server.provider.accepted)
    with psycopg.connect(fresh_db) as conn:
        rows = dict(conn.execute("select outbox_id::text, status from ops.outbox").fetchall())
    assert max(accepted.values()) == 1, "a customer got the same message twice"
    statuses = Counter(rows.values())
    # An ambiguous mail send leaves all its personalizations (up to a batch's emails) unknown,
    # so the sent share varies more with the seed than it would one request per message.
    assert set(statuses) <= {"sent", "unknown", "failed"} and statuses["sent"] > 120
    # every row the outbox calls sent was accepted exactly once; nothing accepted is unaccounted
    assert {i for i, s in rows.items() if s == "sent"} <= set(accepted)
    assert set(accepted) <= {i for i, s in rows.items() if s in ("sent", "unknown")}
    # retried rows (429/503) went out later, once
    with psycopg.connect(fresh_db) as conn:
        retried = conn.execute(
            "select count(*) from ops.outbox where attempts > 1 and status = 'sent'"
        ).fetchone()[0]
    assert retried > 0
