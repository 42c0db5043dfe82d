"""Benchmark: dispatch throughput and the honesty of the rate limit, against the stand-in server.

The stand-in provider runs in its own process (as a provider would), with 0 ms or 50 ms of
latency. For each channel, latency and size: plan N outbox rows into a fresh database, run one
dispatcher (``lifecycle.delivery.dispatch.dispatch``, the real twilio / sendgrid SDKs) with a high
configured rate, and print messages/s, the dispatcher's CPU per message and what the stand-in
accepted. Beside it, in the same run, the straightforward approach as the baseline: a loop that
calls the SDK once per message, one after another (on a sample: at 50 ms it moves ~20 a second).
Then the low-limit runs: a configured rate the stand-in also enforces (429 beyond it), reporting
the achieved rate against the configured one and the 429s we caused. Measures, asserts nothing.

    .venv/bin/python bench/bench_dispatch.py --sizes 10k,1M

Databases are created on the embedded server (or LIFECYCLE_WAREHOUSE_URL's) and dropped.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, date, datetime, timedelta

import psycopg
from bench_generate_load import fresh_database, label, parse_size
from sendgrid import SendGridAPIClient
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from lifecycle.delivery import dispatch as dispatch_module
from lifecycle.delivery.dispatch import dispatch
from lifecycle.delivery.transports import get_transport
from lifecycle.settings import Settings
from lifecycle.warehouse.server import resolve_url

D = date(2026, 6, 1)
T0 = datetime(2026, 6, 1, 10, tzinfo=UTC)
HIGH = {"twilio_segments_per_s": 100_000.0, "sendgrid_requests_per_s": 10_000.0}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Standin:
    """The stand-in provider in a child process."""

    def __init__(self, **faults: float):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        code = ("import sys, json; from lifecycle.delivery.standin import serve, Faults; "
                "serve(int(sys.argv[1]), Faults(**json.loads(sys.argv[2])))")
        self.proc = subprocess.Popen([sys.executable, "-c", code, str(self.port),
                                      json.dumps(faults)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(200):
            try:
                self.stats()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("stand-in server did not start")

    def stats(self) -> dict:
        with urllib.request.urlopen(self.url + "/_standin/stats", timeout=30) as r:
            return json.loads(r.read())

    def reset(self) -> None:
        req = urllib.request.Request(self.url + "/_standin/reset", data=b"{}", method="POST")
        urllib.request.urlopen(req, timeout=10).close()

    def cpu_s(self) -> float:
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def plan_rows(url: str, channel: str, n: int) -> None:
    """N due rows of one channel, each with its own personal text (as rendered templates are)."""
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        with cur.copy(
            "copy ops.outbox (message_key, plan_date, customer_id, phase, step, cycle_key, "
            "channel, to_address, subject, body, send_at, window_end_at, deadline_at) from stdin"
        ) as copy:
            for i in range(n):
                to = f"+38067{i:07d}" if channel == "sms" else f"member{i}@example.com"
                subject = None if channel == "sms" else "Your renewal perk"
                copy.write_row((f"bench|{i}|{channel}", D, f"C{i}", "retention", 1, "M", channel,
                                to, subject, f"Olena {i}, renew this week: a free month for you",
                                T0, T0 + timedelta(hours=10), T0 + timedelta(hours=24)))
        conn.execute("analyze ops.outbox")


class _Unfenced:
    """In place of the dispatcher's hand-over checks: none (the transports then send without
    asking). Only to measure what the fence costs, in the same run; never how we send."""

    def __init__(self, *_: object) -> None:
        pass

    def for_batch(self, _batch_id: int) -> None:
        return None

    def close(self) -> None:
        pass


def run_dispatcher(url: str, standin: Standin, channel: str, n: int,
                   rates: dict[str, float], fenced: bool = True) -> dict:
    plan_rows(url, channel, n)
    standin.reset()
    settings = Settings(transport="standin", standin_url=standin.url, **rates)
    transport = get_transport("standin", url, settings)
    server_cpu0, cpu0, t0 = standin.cpu_s(), time.process_time(), time.perf_counter()
    checks = dispatch_module.HandOvers
    if not fenced:
        dispatch_module.HandOvers = _Unfenced
    try:
        report = dispatch(url, transport, now=T0, channel=channel, settings=settings)
    finally:
        dispatch_module.HandOvers = checks
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    transport.close()
    stats = standin.stats()
    provider = stats["twilio" if channel == "sms" else "sendgrid"]
    with psycopg.connect(url) as conn:
        statuses = dict(conn.execute(
            "select status, count(*) from ops.outbox group by 1").fetchall())
        conn.execute("truncate ops.outbox cascade")
        conn.execute("delete from ops.rate_limits")
        conn.commit()
    span = (provider["last_at"] or 0) - (provider["first_at"] or 0)
    return {
        "wall_s": wall,
        "msg_per_s": n / wall,
        "cpu_us_per_msg": cpu / n * 1e6,
        "server_cpu_us_per_msg": (standin.cpu_s() - server_cpu0) / n * 1e6,
        "accepted": provider["messages"],
        "requests": provider["requests"],
        "achieved_req_per_s": (provider["requests"] - 1) / span if span > 0 else None,
        "peak_requests_in_1s": provider["peak_requests_in_1s"],
        "rate_limited": stats["rate_limited"],
        "statuses": statuses,
        "outcomes": report.as_dict()["outcomes"],
    }


def run_baseline(standin: Standin, channel: str, n: int) -> dict:
    """The straightforward way: one SDK call per message, sequentially."""
    standin.reset()
    t0, cpu0 = time.perf_counter(), time.process_time()
    if channel == "sms":
        class Local(TwilioHttpClient):
            def request(self, method, url, *a, **kw):  # noqa: ANN001
                return super().request(
                    method, url.replace("https://api.twilio.com", standin.url), *a, **kw)

        client = Client("AC" + "0" * 32, "token", http_client=Local())
        for i in range(n):
            client.messages.create(to=f"+38067{i:07d}", messaging_service_sid="MG" + "0" * 32,
                                   body=f"Olena {i}, renew this week: a free month for you")
    else:
        sg = SendGridAPIClient(api_key="SG.bench", host=standin.url)
        for i in range(n):
            sg.send({"from": {"email": "club@example.com"}, "subject": "Your renewal perk",
                     "content": [{"type": "text/plain",
                                  "value": f"Olena {i}, renew this week: a free month for you"}],
                     "personalizations": [{"to": [{"email": f"member{i}@example.com"}]}]})
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return {"msg_per_s": n / wall, "cpu_us_per_msg": cpu / n * 1e6,
            "accepted": standin.stats()["twilio" if channel == "sms" else "sendgrid"]["messages"]}


def print_fence_cost(url: str, standin: Standin, channel: str, n: int, rounds: int = 3) -> None:
    """Fenced and unfenced runs of the same size, alternated; the median of each."""
    runs: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(rounds):
        for fenced in (False, True):
            runs[fenced].append(run_dispatcher(url, standin, channel, n, HIGH, fenced)["msg_per_s"])
    fenced, unfenced = (sorted(runs[f])[rounds // 2] for f in (True, False))
    print(f"{channel:<6} fence cost {label(n):>4}: fenced {fenced:,.0f} msg/s, without the "
          f"hand-over checks {unfenced:,.0f} msg/s ({(fenced / unfenced - 1) * 100:+.1f}%; "
          f"medians of {rounds} alternated runs)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10k", help="messages per run, e.g. 10k,1M")
    ap.add_argument("--latencies", default="0,50", help="stand-in latency in ms")
    ap.add_argument("--channels", default="sms,email")
    ap.add_argument("--baseline", type=int, default=2000,
                    help="messages in the baseline sample at 0 ms (a tenth of it at 50 ms)")
    ap.add_argument("--sms-limit", type=float, default=200.0, help="low limit, segments/s")
    ap.add_argument("--email-limit", type=float, default=10.0, help="low limit, requests/s")
    ap.add_argument("--limit-seconds", type=float, default=30.0,
                    help="how long each low-limit run sends")
    ap.add_argument("--fence-cost", action="store_true",
                    help="also run each dispatch without the hand-over checks, alternating "
                         "fenced and unfenced runs, to print what the fence costs")
    args = ap.parse_args()
    channels = args.channels.split(",")
    print(f"machine: {os.cpu_count()} cores, {platform.machine()}, Python "
          f"{platform.python_version()}; {datetime.now(UTC):%Y-%m-%d}")
    server = resolve_url()
    with fresh_database(server) as url:
        for latency in (float(x) for x in args.latencies.split(",")):
            standin = Standin(latency_ms=latency)
            try:
                print(f"\n== stand-in latency {latency:g} ms ==")
                for channel in channels:
                    sample = args.baseline if latency == 0 else max(50, args.baseline // 10)
                    b = run_baseline(standin, channel, sample)
                    print(f"{channel:<6} baseline (sequential SDK loop, {sample} msgs): "
                          f"{b['msg_per_s']:,.0f} msg/s, {b['cpu_us_per_msg']:,.0f} us CPU/msg,"
                          f" accepted {b['accepted']}")
                    for n in (parse_size(s) for s in args.sizes.split(",")):
                        if args.fence_cost:
                            print_fence_cost(url, standin, channel, n)
                        r = run_dispatcher(url, standin, channel, n, HIGH)
                        print(f"{channel:<6} dispatch {label(n):>4}: {r['msg_per_s']:,.0f} msg/s "
                              f"({r['wall_s']:.1f} s, x{r['msg_per_s'] / b['msg_per_s']:.0f} "
                              f"the baseline), {r['cpu_us_per_msg']:,.0f} us CPU/msg "
                              f"(stand-in {r['server_cpu_us_per_msg']:,.0f}), accepted "
                              f"{r['accepted']:,} in {r['requests']:,} requests, 429s "
                              f"{r['rate_limited']}, outbox {r['statuses']}")
            finally:
                standin.close()
        print("\n== low limits: configured rate = the stand-in's own limit (429 beyond it) ==")
        for channel, limit in (("sms", args.sms_limit), ("email", args.email_limit)):
            if channel not in channels:
                continue
            per_request = 1 if channel == "sms" else 1000
            n = int(limit * per_request * args.limit_seconds)
            standin = Standin(latency_ms=50, max_rps=limit)
            try:
                rates = {**HIGH, ("twilio_segments_per_s" if channel == "sms"
                                  else "sendgrid_requests_per_s"): limit}
                r = run_dispatcher(url, standin, channel, n, rates)
            finally:
                standin.close()
            unit = "segments/s" if channel == "sms" else "requests/s"
            achieved = r["achieved_req_per_s"]
            print(f"{channel:<6} limit {limit:g} {unit}, {n:,} msgs: achieved {achieved:.2f} "
                  f"({(achieved / limit - 1) * 100:+.2f}%), peak in any 1 s "
                  f"{r['peak_requests_in_1s']}, 429s caused {r['rate_limited']}, "
                  f"outbox {r['statuses']}")


if __name__ == "__main__":
    main()
