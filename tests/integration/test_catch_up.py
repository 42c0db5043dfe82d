"""Catch-up on a real Airflow scheduler: lifecycle_daily was down for the days its catch-up
bound allows (two here: LIFECYCLE_DAILY_CATCHUP_DAYS=2; one missed day fewer than the default
bound of 3 saves a whole daily run, and the oldest missed day still sits exactly on the bound).

The scheduler creates the missed runs (catchup=True) and runs them in order. Each builds dbt
(the lifecycle history gets every day); with the wall clock only today's is planned (the others'
send windows have passed, their customers are caught today); the stand-in provider never sees a
message twice. Then today's run is cleared and run again: nothing changes.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
import yaml
from airflow_stack import AirflowStack

from lifecycle.data.generator import generate
from lifecycle.delivery.standin import StandinServer
from lifecycle.settings import Settings

pytestmark = pytest.mark.slow


def _outbox(url: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute("select outbox_id, plan_date, customer_id, phase, step, status, "
                            "send_at, window_end_at, channel from ops.outbox "
                            "order by outbox_id").fetchall()


def test_missed_days_are_caught_up_in_order_and_nothing_is_sent_twice(
    tmp_path, server_url, fresh_db
):
    today = datetime.now(UTC).date()
    missed = 2
    start = today - timedelta(days=missed)
    generate(400, today - timedelta(days=420), today, 11, url=fresh_db)
    # Every customer in a zone where it is about noon now: today's send window (and the 24 h
    # deadline after it opens) is open for the whole test, whatever time of day it runs. With
    # the generator's European zones a run after 22:00 UTC found the window closed and the
    # deadline passed: rows expired, which is right, but the test then checks nothing.
    zone = f"Etc/GMT{datetime.now(UTC).hour - 12:+d}"  # POSIX sign: Etc/GMT+5 is UTC-5
    with psycopg.connect(fresh_db) as conn:
        conn.execute("update raw.customers set timezone = %s", (zone,))
    rules = yaml.safe_load(Settings().rules_path.read_text())
    rules["policy"]["send_window"] = {"start": "00:00", "end": "23:59"}  # any time of day
    rules_file = tmp_path / "phases.yml"
    rules_file.write_text(yaml.safe_dump(rules, sort_keys=False))

    with StandinServer() as standin:
        env = {
            "LIFECYCLE_TRANSPORT": "standin",
            "LIFECYCLE_STANDIN_URL": standin.url,
            "LIFECYCLE_TWILIO_SEGMENTS_PER_S": "1000",
            "LIFECYCLE_RULES_FILE": str(rules_file),
            "LIFECYCLE_DAILY_START_DATE": start.isoformat(),
            # midnight UTC: today's run is due whenever the test runs
            "LIFECYCLE_DAILY_SCHEDULE": "0 0 * * *",
            "LIFECYCLE_TASK_RETRIES": "0",  # a failure shows at once, not after retry delays
            # the oldest missed day is exactly on the bound: built, not stopped
            "LIFECYCLE_DAILY_CATCHUP_DAYS": str(missed),
        }
        with AirflowStack(tmp_path / "airflow", server_url, fresh_db, env=env) as stack:
            stack.wait_parsed("lifecycle_daily")
            stack.unpause("lifecycle_daily")
            # Three full daily runs (a task process per task instance): minutes on an idle
            # machine; four took 21 min with the load average at 6-9 (when every model had a
            # task), so the wait allows for a busy one.
            runs = stack.wait_runs("lifecycle_daily", missed + 1, timeout=2700)
            logs = stack.logs()
            days = [r[1].date() for r in runs]
            assert days == [start + timedelta(days=i) for i in range(missed + 1)], (runs, logs)
            assert {r[2] for r in runs} == {"success"}, (runs, logs)
            states = {d: stack.task_states("lifecycle_daily", r[0]) for d, r in zip(days, runs,
                                                                                    strict=True)}
            first = _outbox(fresh_db)
            sent_first = Counter(a.outbox_id for a in standin.provider.accepted)

            # Rerun today's run from scratch (a data engineer clears it after a fix).
            stack._airflow("tasks", "clear", "lifecycle_daily", "-s", today.isoformat(), "-e",
                           (today + timedelta(days=1)).isoformat(), "-y")
            deadline = datetime.now(UTC) + timedelta(minutes=20)
            while datetime.now(UTC) < deadline:
                time.sleep(3)
                rerun = stack.runs("lifecycle_daily")[-1]
                if rerun[2] in ("success", "failed"):
                    break
            assert rerun[2] == "success", stack.logs()
            assert stack.task_states("lifecycle_daily", rerun[0])["plan"] == "success"

    # missed days: dbt built (their tasks succeeded), planning skipped with a reason
    for d in days[:missed]:
        assert states[d]["plan"] == "skipped", states[d]
        assert states[d]["dbt.build"] == "success"
    assert states[today]["plan"] == "success"
    with psycopg.connect(fresh_db) as conn:
        built = conn.execute(
            "select min(valid_from), max(valid_to) from analytics.customer_lifecycle_history"
        ).fetchone()
        skipped = conn.execute("select plan_date from ops.runs where step = 'plan' and "
                               "status = 'skipped' order by plan_date").fetchall()
    assert built == (start, today)  # every missed day is in the history
    assert [r[0] for r in skipped][:missed] == days[:missed]

    # only today was planned; every due message went out once, and the rerun changed nothing
    assert first and {r[1] for r in first} == {today}
    assert _outbox(fresh_db) == first
    accepted = Counter(a.outbox_id for a in standin.provider.accepted)
    assert accepted == sent_first and max(accepted.values()) == 1
    sent = {str(r[0]) for r in first if r[5] == "sent"}
    assert sent and sent == set(accepted)
    end_of_run = datetime.now(UTC)
    left = [r for r in first if r[5] != "sent"]
    # what is not sent was not due (window not open) or was refused for good
    assert all(r[5] in ("planned", "failed") for r in left), Counter(r[5] for r in left)
    # (a call waits for the front desk, planned, whatever the time: never dispatched)
    assert all(r[6] > end_of_run or r[7] < end_of_run for r in left
               if r[5] == "planned" and r[8] != "call")
