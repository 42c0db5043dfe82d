"""Benchmark: the dbt build on a generated club, full and then incremental, at several sizes.

For each size: generate the club into a fresh database (``generate(url=...)``), run
``dbt build --full-refresh`` as of the last generated day (models, seeds and data tests; no
unit tests), then load one more day (that day's visits, memberships and service purchases,
copied from the last generated day under new ids, plus a share of those visits dated three
days earlier, as a late load would bring them) and run the daily incremental ``dbt build`` as
of that day. Before it, ``--history-days`` (default 30) days of sent messages and
control-group skips are written into ``ops`` at the demo's rates, so that the models reading
the outbox (phase_conversions, message_delivery, phase_uplift) do a club's daily work, not an
empty outbox's. Prints rows and seconds per model (from target/run_results.json) and totals;
measures, asserts nothing.

    .venv/bin/python bench/bench_dbt.py --sizes 10k,100k,1M

``--start`` sets the first generated day and with it the visit history: the default
(2019-07-01 to 2026-06-30, seven years) gives about 100 visits per customer, ~100M visits at
1M customers. Databases are created on the embedded server (or LIFECYCLE_WAREHOUSE_URL's) and
dropped afterwards unless ``--keep``. ``--on NAME`` builds more days on a kept database
(no generation): it loads the day after the last one built (and the day before's messages)
and builds it incrementally, ``--days`` times, so a change to the models can be measured
without generating again:

    .venv/bin/python bench/bench_dbt.py --on bench_dbt_1m_eab0c4 --days 2 [--in-process]

``--in-process`` builds as the daily DAG's dbt.build task does (``lifecycle.transform.
day_build``: in the process, on a manifest parsed once), where the default runs a ``dbt build``
subprocess whose wall includes dbt's start-up and parse.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from datetime import date, datetime, timedelta
from pathlib import Path

import psycopg
from bench_generate_load import fresh_database, label, parse_size
from psycopg import sql

from lifecycle.data.generator import generate
from lifecycle.settings import get_settings
from lifecycle.transform.dbt import run_dbt
from lifecycle.warehouse.server import resolve_url

LATE_SHARE = 0.05  # of the new day's visits, how many are dated three days earlier instead


def load_next_day(url: str, day: date) -> dict[str, int]:
    """Load ``day`` as the club's daily export would: copies of the day before under new ids."""
    before = day - timedelta(days=1)
    suffix = f"-{day:%Y%m%d}"
    with psycopg.connect(url) as conn:
        conn.execute("set local timezone = 'UTC'")
        visits = conn.execute(
            """
            insert into raw.visits (visit_id, customer_id, visited_at)
            select visit_id || %(suffix)s, customer_id,
                   visited_at + case when abs(hashtext(visit_id)) %% 100 < %(late)s
                                     then interval '-2 days' else interval '1 day' end
            from raw.visits
            where visited_at >= %(before)s::timestamptz - interval '12 hours'
              and visited_at < %(day)s::timestamptz - interval '12 hours'
            """,
            {"suffix": suffix, "late": int(LATE_SHARE * 100), "before": before, "day": day},
        ).rowcount
        memberships = conn.execute(
            """
            insert into raw.memberships
              (membership_id, customer_id, product, purchased_on, starts_on, ends_on, price, status)
            select membership_id || %(suffix)s, customer_id, product, purchased_on + 1,
                   starts_on + 1, ends_on + 1, price, status
            from raw.memberships
            where purchased_on = %(before)s
            """,
            {"suffix": suffix, "before": before},
        ).rowcount
        purchases = conn.execute(
            """
            insert into raw.purchases (purchase_id, customer_id, service, purchased_at, amount)
            select purchase_id || %(suffix)s, customer_id, service,
                   purchased_at + interval '1 day', amount
            from raw.purchases
            where purchased_at >= %(before)s::timestamptz - interval '12 hours'
              and purchased_at < %(day)s::timestamptz - interval '12 hours'
            """,
            {"suffix": suffix, "before": before, "day": day},
        ).rowcount
    return {"visits": visits, "memberships": memberships, "purchases": purchases}


# The demo's rates (bench/RESULTS.md, make demo): 5,758 messages and 10,212 control-group skips
# for 10,000 customers in 30 days. The models that read the outbox (phase_conversions,
# message_delivery, phase_uplift) recompute every exposure each day: with an empty outbox a
# daily build would not show what they cost once the club has been messaging for a while.
SENT_PER_CUSTOMER_DAY = 0.0192
CONTROL_PER_CUSTOMER_DAY = 0.034


def write_message_history(url: str, first: date, last: date) -> dict[str, int]:
    """Sent messages and control-group skips for the days first..last, as planning writes them.

    Drawn (by hash, so reruns agree) from the steps customer_phase_eligibility holds, at the
    demo's rates per customer; one message per customer and day, as the outbox allows. Each
    row's updated_at is its send time, as dispatch stamps it (not the minute the bench wrote a
    year of them): message_delivery reads the messages updated since its last build.
    """
    schema = get_settings().dbt_schema
    eligibility = sql.Identifier(schema, "customer_phase_eligibility")
    facts = sql.Identifier(schema, "customer_facts")
    with psycopg.connect(url) as conn:
        customers, eligible = conn.execute(
            sql.SQL("select (select count(*) from {}), (select count(*) from {})").format(
                facts, eligibility
            )
        ).fetchone()
        if not eligible:
            return {"sent": 0, "control skips": 0}
        # per mille of the eligible rows a day, so that the rates per customer hold
        sent_share = min(1000, round(SENT_PER_CUSTOMER_DAY * customers / eligible * 1000))
        control_share = min(1000, round(CONTROL_PER_CUSTOMER_DAY * customers / eligible * 1000))
        days = {"first": first, "last": last}
        sent = conn.execute(
            sql.SQL(
                """
                insert into ops.outbox (message_key, plan_date, customer_id, phase, step,
                    cycle_key, channel, to_address, body, send_at, window_end_at, deadline_at,
                    status, sent_at, updated_at)
                select 'bench-' || d || '-' || customer_id, d, customer_id, phase, step,
                    'bench', 'sms', '+380000000000', 'bench', d + time '10:00',
                    d + time '20:00', d + time '21:00', 'sent', d + time '10:00',
                    d + time '10:00'
                from (
                    select generate_series(%(first)s::date, %(last)s::date, '1 day')::date as d
                ) as g
                cross join lateral (
                    select distinct on (customer_id) customer_id, phase, step
                    from {}
                    where abs(hashtext(customer_id || g.d)) %% 1000 < %(share)s
                    order by customer_id, priority
                ) as e
                on conflict do nothing
                """
            ).format(eligibility),
            {**days, "share": sent_share},
        ).rowcount
        control = conn.execute(
            sql.SQL(
                """
                insert into ops.skips (plan_date, customer_id, phase, step, reason)
                select g.d, customer_id, phase, step, 'control_group'
                from (
                    select generate_series(%(first)s::date, %(last)s::date, '1 day')::date as d
                ) as g
                cross join lateral (
                    select customer_id, phase, step from {}
                    where abs(hashtext(customer_id || g.d || 'c')) %% 1000 < %(share)s
                ) as e
                on conflict do nothing
                """
            ).format(eligibility),
            {**days, "share": control_share},
        ).rowcount
        conn.execute("analyze ops.outbox")
        conn.execute("analyze ops.skips")
    return {"sent": sent, "control skips": control}


def results(target: Path) -> dict:
    return json.loads((target / "run_results.json").read_text())


def manifest_of(target: Path) -> dict | None:
    path = target / "manifest.json"
    return json.loads(path.read_text()) if path.exists() else None


def node_name(unique_id: str) -> str:
    kind, _, rest = unique_id.split(".", 2)
    return f"{kind} {rest}"


def _span(r: dict) -> tuple[datetime, datetime] | None:
    """A node's (start, end) from run_results timing: compile start to execute end."""
    stamps = [t[k] for t in r.get("timing") or [] for k in ("started_at", "completed_at")]
    stamps = [datetime.fromisoformat(s.replace("Z", "+00:00")) for s in stamps if s]
    return (min(stamps), max(stamps)) if stamps else None


def critical_path(run: dict, manifest: dict) -> list[tuple[str, float, float]]:
    """The chain of nodes the build's end waited for: from the last node to finish, each
    step back to the dependency (a model, or a test of one) that finished last before it
    started. Returns (node, seconds, idle seconds before it) from the first to the last."""
    spans = {r["unique_id"]: s for r in run["results"] if (s := _span(r))}
    if not spans:
        return []
    nodes = manifest["nodes"]
    # dbt build: a node also waits for the tests of what it depends on
    tests_of: dict[str, list[str]] = {}
    for uid, node in nodes.items():
        if uid.startswith("test."):
            for dep in node["depends_on"]["nodes"]:
                tests_of.setdefault(dep, []).append(uid)
    chain = []
    uid = max(spans, key=lambda u: spans[u][1])
    while uid:
        start, end = spans[uid]
        deps = [d for d in nodes.get(uid, {}).get("depends_on", {}).get("nodes", []) if d in spans]
        deps += [t for d in list(deps) for t in tests_of.get(d, []) if t in spans and t != uid]
        before = [d for d in deps if spans[d][1] <= start]
        prev = max(before, key=lambda d: spans[d][1]) if before else None
        idle = (start - spans[prev][1]).total_seconds() if prev else 0.0
        chain.append((uid, (end - start).total_seconds(), idle))
        uid = prev
    return chain[::-1]


def report(title: str, run: dict, wall: float, manifest: dict | None = None) -> dict[str, float]:
    rows = run["results"]
    models = [r for r in rows if r["unique_id"].split(".")[0] in ("model", "seed")]
    tests = [r for r in rows if r["unique_id"].split(".")[0] == "test"]
    print(f"  {title}: dbt wall {wall:.1f} s (dbt's own elapsed {run['elapsed_time']:.1f} s)")
    print(f"    {'model':<44}{'rows':>13}{'s':>8}")
    for r in sorted(models, key=lambda r: -r["execution_time"]):
        affected = (r.get("adapter_response") or {}).get("rows_affected")
        shown = f"{affected:,}" if isinstance(affected, int) and affected >= 0 else "-"
        print(f"    {node_name(r['unique_id']):<44}{shown:>13}{r['execution_time']:8.1f}")
    model_s = sum(r["execution_time"] for r in models)
    test_s = sum(r["execution_time"] for r in tests)
    slow = sorted(tests, key=lambda r: -r["execution_time"])[:5]
    print(
        f"    models {model_s:.1f} s; {len(tests)} data tests {test_s:.1f} s, slowest: "
        + ", ".join(f"{r['unique_id'].split('.')[2]} {r['execution_time']:.1f}" for r in slow)
    )
    if manifest:
        path = critical_path(run, manifest)
        waited = sum(i for _, _, i in path)
        print(
            f"    critical path ({sum(s + i for _, s, i in path):.1f} s, of which {waited:.1f} s "
            "between nodes): "
            + " -> ".join(
                f"{node_name(u).split(' ', 1)[1].split('.')[0]} {s:.1f}"
                + (f" (+{i:.1f} waiting)" if i >= 0.5 else "")
                for u, s, i in path
                if s >= 0.5 or i >= 0.5 or u.startswith(("model.", "seed."))
            )
        )
    return {"wall": wall, "models": model_s, "tests": test_s}


def build(url: str, as_of: date, target: Path, full_refresh: bool) -> tuple[dict, float]:
    args = ["build", "--exclude", "resource_type:unit_test"]
    if full_refresh:
        args.append("--full-refresh")
    began = time.perf_counter()
    run_dbt(url, args, as_of=as_of, target_path=target)
    return results(target), time.perf_counter() - began


def build_in_process(url: str, as_of: date, target: Path) -> tuple[dict, float]:
    """The day's build as the daily DAG's dbt.build task runs it: in this process on a
    manifest parsed once (lifecycle.transform.day_build). The parse (the first call in a
    process) is printed apart and not in the wall."""
    from lifecycle.pipeline import rules_for_dbt
    from lifecycle.transform.day_build import BUILT, DAY_FLAGS, _runner

    settings = get_settings()
    began = time.perf_counter()
    runner = _runner(url, rules_for_dbt(settings), settings, None)
    if (parsed := time.perf_counter() - began) > 0.5:
        print(f"  dbt parse in process: {parsed:.1f} s (not in the build's wall)")
    began = time.perf_counter()
    result = runner.invoke("build", as_of, *DAY_FLAGS)
    wall = time.perf_counter() - began
    if not getattr(result.result, "results", None):
        raise SystemExit(f"dbt build as of {as_of} ran nothing: {result.exception}")
    result.result.write(str(target / "run_results.json"))
    runner.runner.manifest.write(str(target / "manifest.json"))
    failed = [r.node.unique_id for r in result.result.results
              if str(r.status) not in BUILT]
    if failed:
        raise SystemExit(f"dbt build as of {as_of}: not passed: {failed}")
    return results(target), wall


def last_built_day(url: str) -> date:
    facts = sql.Identifier(get_settings().dbt_schema, "customer_facts")
    with psycopg.connect(url) as conn:
        row = conn.execute(sql.SQL("select max(as_of_date) from {}").format(facts)).fetchone()
    if row[0] is None:
        raise SystemExit(f"{url.rsplit('/', 1)[1]}: no customer_facts built yet")
    return row[0]


def rerun(url: str, days: int, results_dir: Path | None = None,
          in_process: bool = False) -> None:
    """Incremental builds of the next ``days`` days on a kept database.

    ``results_dir`` keeps each day's run_results.json and manifest.json (as
    ``<day>-run_results.json``, ...) for reading node timings afterwards.
    """
    with tempfile.TemporaryDirectory(prefix="bench_dbt_") as tmp:
        for _ in range(days):
            day = last_built_day(url) + timedelta(days=1)
            loaded = load_next_day(url, day)
            loaded |= write_message_history(url, day - timedelta(days=1), day - timedelta(days=1))
            print(f"loaded {day}: " + ", ".join(f"{k} {v:,}" for k, v in loaded.items()))
            if in_process:
                run, wall = build_in_process(url, day, Path(tmp))
            else:
                run, wall = build(url, day, Path(tmp), full_refresh=False)
            how = "in process" if in_process else "dbt build subprocess"
            report(f"incremental build as of {day} ({how})", run, wall, manifest_of(Path(tmp)))
            if results_dir is not None:
                results_dir.mkdir(parents=True, exist_ok=True)
                for artifact in ("run_results.json", "manifest.json"):
                    shutil.copy(Path(tmp) / artifact, results_dir / f"{day}-{artifact}")


def calibration(url: str) -> str:
    """Seconds of two fixed single-core workloads, to compare machines between runs.

    Figures of this benchmark have differed by 2-3x between the workplace's machines for the
    same code and data: printed beside them, these say whether the machine or the change moved.
    """
    t0 = time.perf_counter()
    sum(i * i for i in range(5_000_000))
    python_s = time.perf_counter() - t0
    with psycopg.connect(url) as conn:
        conn.execute("set max_parallel_workers_per_gather = 0")
        t0 = time.perf_counter()
        conn.execute(
            "select count(*) from (select md5(g::text) as h from generate_series(1, 2000000) g "
            "order by h) as s"
        )
        sql_s = time.perf_counter() - t0
    return (
        f"calibration: Python loop {python_s:.2f} s, PostgreSQL sort of 2M md5s {sql_s:.2f} s "
        f"(load average {os.getloadavg()[0]:.1f})"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="10k,100k", help="customers per run, e.g. 10k,100k,1M")
    ap.add_argument("--start", type=date.fromisoformat, default=date(2019, 7, 1))
    ap.add_argument("--end", type=date.fromisoformat, default=date(2026, 6, 30))
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--keep", action="store_true", help="keep the databases (named in output)")
    ap.add_argument(
        "--on",
        metavar="DATABASE",
        help="no generation: on a database kept by --keep, load the day after the last one "
        "built and build it incrementally (--days times)",
    )
    ap.add_argument("--days", type=int, default=1, help="with --on: days to load and build")
    ap.add_argument(
        "--in-process",
        action="store_true",
        help="with --on: build in this process as the daily DAG does (day_build: the project "
        "parsed once, not timed), not with a `dbt build` subprocess (start-up and parse in its "
        "wall)",
    )
    ap.add_argument(
        "--results-dir",
        type=Path,
        help="with --on: keep each day's run_results.json and manifest.json here",
    )
    ap.add_argument(
        "--history-days",
        type=int,
        default=30,
        help="days of sent messages and control-group skips written before the incremental "
        "build, at the demo's rates (0: an empty outbox); with --on each day adds one",
    )
    args = ap.parse_args()
    sizes = [parse_size(s) for s in args.sizes.split(",")]

    server = resolve_url()
    if args.on:
        print(calibration(server))
        rerun(server.rsplit("/", 1)[0] + "/" + args.on, args.days, args.results_dir,
              in_process=args.in_process)
        return
    with psycopg.connect(server) as conn:
        pg = conn.execute("show server_version").fetchone()[0]
    print(
        f"machine: {os.cpu_count()} cores (nproc), {platform.machine()}, "
        f"Python {platform.python_version()}, PostgreSQL {pg}, {time.strftime('%Y-%m-%d')}"
    )
    print(calibration(server))
    print(
        f"period {args.start}..{args.end}, seed {args.seed}; full build as of {args.end}, "
        f"incremental as of {args.end + timedelta(days=1)}\n"
    )

    summary = []
    for n in sizes:
        with fresh_database(server, f"bench_dbt_{label(n).lower()}_", keep=args.keep) as url:
            name = url.rsplit("/", 1)[1]
            gen = generate(n, args.start, args.end, args.seed, url=url)
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("vacuum analyze")
            print(
                f"== {label(n)} customers ({name}): "
                + ", ".join(f"{k.removesuffix('.csv')} {v:,}" for k, v in gen.rows.items())
                + f"; generated and loaded in {gen.seconds:.0f} s"
            )
            with tempfile.TemporaryDirectory(prefix="bench_dbt_") as tmp:
                target = Path(tmp)
                run, wall = build(url, args.end, target, full_refresh=True)
                full = report(f"full build as of {args.end}", run, wall)
                day = args.end + timedelta(days=1)
                loaded = load_next_day(url, day)
                loaded |= write_message_history(
                    url, args.end - timedelta(days=args.history_days - 1), args.end
                )
                print(f"  loaded {day}: " + ", ".join(f"{k} {v:,}" for k, v in loaded.items()))
                run, wall = build(url, day, target, full_refresh=False)
                incremental = report(
                    f"incremental build as of {day}", run, wall, manifest_of(target)
                )
            summary.append((n, gen.rows["visits.csv"], full, incremental))
            print()

    print(
        "| customers | visits | full build s (models / tests) | incremental build s "
        "(models / tests) |"
    )
    print("|---:|---:|---:|---:|")
    for n, visits, full, inc in summary:
        print(
            f"| {n:,} | {visits:,} | {full['wall']:.0f} ({full['models']:.0f} / "
            f"{full['tests']:.0f}) | {inc['wall']:.0f} ({inc['models']:.0f} / "
            f"{inc['tests']:.0f}) |"
        )


if __name__ == "__main__":
    main()
