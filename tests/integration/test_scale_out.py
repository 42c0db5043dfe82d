"""lifecycle_dispatch on a real Airflow deployment: LocalExecutor, and CeleryExecutor with two
workers on the local Redis broker, draining one outbox through the real Twilio SDK into the
stand-in provider. The provider's log must never show a message twice; with two workers both
shards drain side by side. Throughput figures are printed (bench/RESULTS.md), not asserted."""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from airflow_stack import AirflowStack, broker_reachable

from lifecycle.delivery.standin import StandinServer

pytestmark = pytest.mark.slow

N = int(os.environ.get("LIFECYCLE_SCALE_OUT_MESSAGES", "3000"))
# The stand-in provider's answer time. 50 ms keeps the suite short; Twilio's API answers a
# message create in roughly 150-400 ms, so the scale-out figure in bench/RESULTS.md is taken
# at 150 ms, where a drain waits on the provider as a real one does (8 requests in flight).
LATENCY_MS = int(os.environ.get("LIFECYCLE_SCALE_OUT_LATENCY_MS", "50"))
BROKER = os.environ.get("LIFECYCLE_TEST_BROKER_URL", "redis://127.0.0.1:6379/7")


def plan_due_sms(url: str, n: int) -> None:
    now = datetime.now(UTC)
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        with cur.copy(
            "copy ops.outbox (message_key, plan_date, customer_id, phase, step, cycle_key, "
            "channel, to_address, body, send_at, window_end_at, deadline_at) from stdin"
        ) as copy:
            for i in range(n):
                copy.write_row((f"scale|{i}", now.date(), f"C{i}", "retention", 1, "M", "sms",
                                f"+38067{i:07d}", f"Renew {i}", now - timedelta(minutes=1),
                                now + timedelta(hours=2), now + timedelta(hours=24)))


def drain_once(tmp_path, server_url: str, url: str, standin: StandinServer, *, executor: str,
               workers: int) -> dict:
    env = {
        "LIFECYCLE_TRANSPORT": "standin",
        "LIFECYCLE_STANDIN_URL": standin.url,
        "LIFECYCLE_DISPATCH_SHARDS": "2",
        # Bound by the provider's latency, not by CPU: one drain moves ~8 / 50 ms = 160 SMS/s.
        "LIFECYCLE_TWILIO_CONCURRENCY": "8",
        "LIFECYCLE_TWILIO_SEGMENTS_PER_S": "100000",
        "LIFECYCLE_DISPATCH_BATCH_SIZE": "200",
        "LIFECYCLE_TASK_RETRIES": "0",  # a failure shows at once, not after retry delays
    }
    stack = AirflowStack(tmp_path / f"airflow-{executor}", server_url, url, executor=executor,
                         workers=workers, broker_url=BROKER if workers else None, env=env)
    with stack:
        stack.wait_parsed("lifecycle_dispatch")
        # Unpaused, the scheduler starts a run for the latest 10-minute slot at once; a drain
        # finding nothing due (a later slot) changes nothing.
        stack.unpause("lifecycle_dispatch")
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            runs = stack.runs("lifecycle_dispatch")
            done = runs and all(r[2] in ("success", "failed") for r in runs)
            if done and not _waiting(url):
                break
            time.sleep(3)
        drains = stack.meta(
            "select run_id, map_index, value from xcom where dag_id = 'lifecycle_dispatch' "
            "and task_id = 'drain_sms' and key = 'return_value' order by run_id, map_index")
        states = {r[0]: stack.task_states("lifecycle_dispatch", r[0]) for r in runs}
        logs = stack.logs()
    assert runs and {r[2] for r in runs} == {"success"}, (runs, states, logs)
    claimed: dict[str, dict[int, int]] = {}
    for run_id, i, v in drains:
        claimed.setdefault(run_id, {})[i] = (json.loads(v) if isinstance(v, str) else v)["claimed"]
    # the run that found the messages; any other one found nothing due
    busy = [c for c in claimed.values() if sum(c.values())]
    assert len(busy) == 1, claimed
    return {"states": states, "claimed": busy[0]}


def _waiting(url: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("select count(*) from ops.outbox where status in "
                            "('planned', 'claimed')").fetchone()[0]


@pytest.fixture
def standin():
    with StandinServer() as server:
        server.provider.configure(latency_ms=LATENCY_MS)
        yield server


def _check_and_figure(url: str, standin: StandinServer, label: str) -> tuple[float, float]:
    accepted = Counter(a.outbox_id for a in standin.provider.accepted)
    with psycopg.connect(url) as conn:
        statuses = dict(conn.execute("select status, count(*) from ops.outbox "
                                     "group by 1").fetchall())
    assert statuses == {"sent": N}
    assert len(accepted) == N and max(accepted.values()) == 1, "a message went out twice"
    times = sorted(a.at for a in standin.provider.accepted)
    rate = (N - 1) / (times[-1] - times[0])
    # the middle 90% of the messages: the drains' ramp-up and the second task's later start
    # (the scheduler's, not the workers') weigh less
    lo, hi = times[N // 20], times[N - 1 - N // 20]
    steady = (N - 1 - 2 * (N // 20)) / (hi - lo)
    print(f"\n[scale-out] {label}: {N} SMS in {times[-1] - times[0]:.1f} s = {rate:.0f} SMS/s "
          f"(middle 90%: {steady:.0f} SMS/s; provider latency {LATENCY_MS} ms)")
    return rate, steady


def test_local_executor_drains_the_outbox_once(tmp_path, server_url, fresh_db, standin):
    plan_due_sms(fresh_db, N)
    result = drain_once(tmp_path, server_url, fresh_db, standin, executor="LocalExecutor",
                        workers=0)
    assert sum(result["claimed"].values()) == N
    _check_and_figure(fresh_db, standin, "LocalExecutor, 2 shards")


@pytest.mark.skipif(not broker_reachable(), reason="no Redis broker on 127.0.0.1:6379: the "
                    "CeleryExecutor scale-out test needs one (LIFECYCLE_TEST_BROKER_URL)")
def test_two_celery_workers_drain_one_outbox_side_by_side_never_twice(tmp_path, server_url,
                                                                       fresh_db, standin):
    plan_due_sms(fresh_db, N)
    t0 = time.monotonic()
    one = drain_once(tmp_path / "one", server_url, fresh_db, standin,
                     executor="CeleryExecutor", workers=1)
    rate_one, steady_one = _check_and_figure(fresh_db, standin, "CeleryExecutor, 1 worker")
    # one worker, one task at a time: the first shard drained everything
    assert sorted(one["claimed"].values()) == [0, N]

    with psycopg.connect(fresh_db) as conn:
        conn.execute("truncate ops.outbox cascade")
        conn.execute("delete from ops.rate_limits")
    standin.provider.reset()
    plan_due_sms(fresh_db, N)
    two = drain_once(tmp_path / "two", server_url, fresh_db, standin,
                     executor="CeleryExecutor", workers=2)
    rate_two, steady_two = _check_and_figure(fresh_db, standin, "CeleryExecutor, 2 workers")
    # both shards ran at once on the two workers and shared the outbox
    assert sum(two["claimed"].values()) == N and min(two["claimed"].values()) > 0, two
    print(f"[scale-out] two workers / one: x{rate_two / rate_one:.2f} "
          f"(middle 90%: x{steady_two / steady_one:.2f}; whole test {time.monotonic() - t0:.0f} s)")
