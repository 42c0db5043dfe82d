"""Real dispatcher processes for the reliability tests: started, frozen, resumed and killed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from datetime import date, datetime, timedelta

import psycopg

from lifecycle.delivery.standin import StandinServer

# A dispatcher as the DAG runs one: settings from JSON, the real SDKs against the stand-in.
# ``now``: an ISO time (the dispatcher's clock starts there), "wall" (the wall clock) or
# "logical:<date>" (a replay of that day, as `lifecycle run --clock logical`).
CHILD = textwrap.dedent(
    """
    import json, sys
    from datetime import UTC, date, datetime
    from lifecycle.delivery.dispatch import dispatch
    from lifecycle.delivery.transports import get_transport
    from lifecycle.pipeline import logical_now
    from lifecycle.settings import Settings
    url, settings, when = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
    s = Settings(transport="standin", **settings)
    t = get_transport("standin", url, s)
    plan_date = None
    if when == "wall":
        now = datetime.now(UTC)
    elif when.startswith("logical:"):
        plan_date = date.fromisoformat(when.split(":", 1)[1])
        now = logical_now(plan_date)
    else:
        now = datetime.fromisoformat(when)
    report = dispatch(url, t, now=now, plan_date=plan_date, settings=s)
    t.close()
    print(json.dumps(report.as_dict()), flush=True)
    """
)


def start(url: str, settings: dict, when: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CHILD, url, json.dumps(settings), when],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ})


def finish(proc: subprocess.Popen, timeout: float = 300) -> dict:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def wait_until(predicate, timeout: float = 60.0, step: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False


def plan_rows(url: str, n: int, *, day: date, send_at: datetime, email_every: int = 0,
              window: timedelta = timedelta(hours=20), deadline: timedelta = timedelta(hours=24),
              body: str = "Hi {i}") -> None:
    """``n`` due outbox rows of ``day`` (SMS; every ``email_every``-th an email)."""
    rows = []
    for i in range(n):
        email = email_every and i % email_every == 0
        channel, to, subject = (("email", f"c{i}@example.com", "Hello") if email
                                else ("sms", f"+38067{i:07d}", None))
        rows.append((f"k{i}", day, f"C{i}", channel, to, subject, body.format(i=i), send_at,
                     send_at + window, send_at + deadline))
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        cur.executemany(
            "insert into ops.outbox (message_key, plan_date, customer_id, phase, step, cycle_key,"
            " channel, to_address, subject, body, send_at, window_end_at, deadline_at) values"
            " (%s, %s, %s, 'return', 1, 'M', %s, %s, %s, %s, %s, %s, %s)",
            rows,
        )


def statuses(url: str) -> dict[int, str]:
    with psycopg.connect(url) as conn:
        return dict(conn.execute("select outbox_id, status from ops.outbox").fetchall())


def accepted_ids(server: StandinServer) -> list[int]:
    """The outbox ids of every message the stand-in accepted (repeats included)."""
    return [int(a.outbox_id) for a in server.provider.accepted]
