"""The shared rate limit: two dispatchers together keep to the configured rate, causing no 429."""

from __future__ import annotations

import threading
import time
from datetime import UTC, date, datetime, timedelta

import psycopg
import pytest

from lifecycle.dispatch import dispatch, throttles_for
from lifecycle.settings import Settings
from lifecycle.standin import StandinServer
from lifecycle.throttle import WarehouseTokenBucket
from lifecycle.transports import get_transport

pytestmark = pytest.mark.slow
T0 = datetime(2026, 6, 1, 10, tzinfo=UTC)


def _plan_sms(url: str, n: int) -> None:
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        cur.executemany(
            "insert into ops.outbox (message_key, plan_date, customer_id, phase, step, cycle_key,"
            " channel, to_address, body, send_at, window_end_at, deadline_at) values"
            " (%s, %s, %s, 'retention', 1, 'M', 'sms', %s, 'Renew now', %s, %s, %s)",
            [(f"k{i}", date(2026, 6, 1), f"C{i}", f"+38067{i:07d}", T0,
              T0 + timedelta(hours=10), T0 + timedelta(hours=24)) for i in range(n)],
        )


def test_two_workers_share_one_rate_and_cause_no_429(fresh_db):
    rate, n = 40.0, 200
    _plan_sms(fresh_db, n)
    with StandinServer() as server:
        server.provider.configure(max_rps=rate * 1.15)
        settings = Settings(transport="standin", standin_url=server.url,
                            twilio_segments_per_s=rate, dispatch_batch_size=10)

        def worker() -> None:
            transport = get_transport("standin", fresh_db, settings)
            dispatch(fresh_db, transport, now=T0, settings=settings,
                     throttles=throttles_for(fresh_db, settings))
            transport.close()

        threads = [threading.Thread(target=worker) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        times = sorted(a.at for a in server.provider.accepted)
        with psycopg.connect(fresh_db) as conn:
            statuses = conn.execute(
                "select status, last_error, count(*) from ops.outbox group by 1, 2").fetchall()
        assert statuses == [("sent", None, n)]
        assert len(times) == n and server.provider.rate_limited == 0
    achieved = (n - 1) / (times[-1] - times[0])
    # Never above the limit (a burst of rate/100 tokens at most). How close to it a loaded
    # machine gets is a performance figure for bench/, not a test assertion.
    assert achieved <= rate * 1.02, achieved


def test_penalty_makes_every_holder_of_the_bucket_wait(fresh_db):
    a = WarehouseTokenBucket(fresh_db, "t", rate_per_s=100, burst=1)
    b = WarehouseTokenBucket(fresh_db, "t", rate_per_s=100, burst=1)
    assert a.reserve(1) == 0.0
    a.penalize(2.0)
    wait = b.reserve(1)
    assert 1.9 < wait < 2.1
    time.sleep(0)
