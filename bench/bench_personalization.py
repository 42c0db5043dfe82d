"""Benchmark: the daily cost of customer_next_best_offer and customer_send_hour.

For each size: generate the club into a fresh database (``generate(url=...)``), build what the
two models read (``dbt build --select +customer_next_best_offer +customer_send_hour``, no unit
tests) as of the last generated day, then build the two models alone ``--repeat`` times, as a
day's run rebuilds them (both are tables). Prints each model's seconds (dbt's run_results),
its rows, and what the rows say: the share of customers with a next-best service, and with a
usual visit time backed by at least ``min_visits`` visits. Measures, asserts nothing.

    .venv/bin/python bench/bench_personalization.py --sizes 10k
    .venv/bin/python bench/bench_personalization.py --sizes 1M --start 2024-07-01

``--on NAME`` times the two models on a database kept by ``--keep`` (or by bench_dbt.py's
``--keep``) without generating again. Databases are created on the embedded server (or
LIFECYCLE_WAREHOUSE_URL's) and dropped afterwards unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from datetime import date
from pathlib import Path

import psycopg
from bench_generate_load import fresh_database, label, parse_size

from lifecycle.data.generator import generate
from lifecycle.rules.loading import load_rules
from lifecycle.settings import get_settings
from lifecycle.transform.dbt import run_dbt
from lifecycle.transform.dbt_vars import phase_vars
from lifecycle.warehouse.server import resolve_url

MODELS = ("customer_next_best_offer", "customer_send_hour")


def _dbt(url: str, as_of: date, args: list[str], target: Path) -> tuple[dict, float]:
    settings = get_settings()
    rules = load_rules(settings.rules_path)
    started = time.perf_counter()
    run_dbt(url, args, as_of=as_of, settings=settings, target_path=target,
            dbt_vars=phase_vars(rules))
    wall = time.perf_counter() - started
    return json.loads((target / "run_results.json").read_text()), wall


def _seconds(run: dict) -> dict[str, float]:
    return {
        r["unique_id"].split(".")[-1]: r["execution_time"]
        for r in run["results"]
        if r["unique_id"].startswith("model.")
    }


def _figures(url: str) -> dict[str, float]:
    settings = get_settings()
    schema = settings.dbt_schema
    min_visits = load_rules(settings.rules_path).policy.send_time.min_visits
    with psycopg.connect(url) as conn:
        customers = conn.execute(f'select count(*) from "{schema}".customer_facts').fetchone()[0]
        nbo_rows, nbo_customers = conn.execute(
            f'select count(*), count(distinct customer_id) from "{schema}".customer_next_best_offer'
        ).fetchone()
        hour_rows, habit = conn.execute(
            f'select count(*), count(*) filter (where visits_counted >= %s) '
            f'from "{schema}".customer_send_hour',
            (min_visits,),
        ).fetchone()
    return {
        "customers": customers,
        "next_best_rows": nbo_rows,
        "with_next_best": nbo_customers / max(customers, 1),
        "send_hour_rows": hour_rows,
        "with_habit": habit / max(customers, 1),
    }


def time_models(url: str, as_of: date, repeat: int) -> dict[str, list[float]]:
    with tempfile.TemporaryDirectory(prefix="bench_personalization_") as tmp:
        target = Path(tmp)
        run, wall = _dbt(
            url, as_of,
            ["build", "--select", *(f"+{m}" for m in MODELS), "--exclude-resource-type",
             "unit_test", "--indirect-selection", "cautious"],
            target,
        )
        print(f"  prerequisites built in {wall:.0f} s")
        times: dict[str, list[float]] = {m: [] for m in MODELS}
        for i in range(repeat):
            run, wall = _dbt(url, as_of, ["run", "--select", *MODELS], target)
            secs = _seconds(run)
            for m in MODELS:
                times[m].append(secs[m])
            print(f"  run {i + 1}: " + ", ".join(f"{m} {secs[m]:.1f} s" for m in MODELS)
                  + f" (dbt wall {wall:.0f} s)")
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="10k", help="customers per run, e.g. 10k,100k,1M")
    ap.add_argument("--start", type=date.fromisoformat, default=date(2024, 7, 1))
    ap.add_argument("--end", type=date.fromisoformat, default=date(2026, 6, 30))
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--repeat", type=int, default=3, help="builds of the two models timed")
    ap.add_argument("--keep", action="store_true", help="keep the databases (named in output)")
    ap.add_argument("--on", metavar="DATABASE", help="no generation: time on a kept database")
    args = ap.parse_args()

    server = resolve_url()
    with psycopg.connect(server) as conn:
        pg = conn.execute("show server_version").fetchone()[0]
    print(
        f"machine: {os.cpu_count()} cores (nproc), {platform.machine()}, "
        f"Python {platform.python_version()}, PostgreSQL {pg}, {time.strftime('%Y-%m-%d')}"
    )
    summary = []
    if args.on:
        url = server.rsplit("/", 1)[0] + "/" + args.on
        with psycopg.connect(url) as conn:
            as_of = conn.execute(
                f'select max(as_of_date) from "{get_settings().dbt_schema}".customer_facts'
            ).fetchone()[0] or args.end
        times = time_models(url, as_of, args.repeat)
        summary.append((args.on, times, _figures(url)))
    else:
        for n in (parse_size(s) for s in args.sizes.split(",")):
            prefix = f"bench_nbo_{label(n).lower()}_"
            with fresh_database(server, prefix, keep=args.keep) as url:
                name = url.rsplit("/", 1)[1]
                gen = generate(n, args.start, args.end, args.seed, url=url)
                with psycopg.connect(url, autocommit=True) as conn:
                    conn.execute("vacuum analyze")
                print(f"== {label(n)} customers ({name}): visits {gen.rows['visits.csv']:,}, "
                      f"purchases {gen.rows['purchases.csv']:,}; generated in {gen.seconds:.0f} s")
                times = time_models(url, args.end, args.repeat)
                summary.append((label(n), times, _figures(url)))
    print("\n| customers | customer_next_best_offer s (rows) | customer_send_hour s (rows) "
          "| with a next-best service | with a habit time |")
    print("|---|---:|---:|---:|---:|")
    for what, times, f in summary:
        nbo, hour = (min(times[m]) for m in MODELS)
        print(f"| {what} ({f['customers']:,}) | {nbo:.1f} ({f['next_best_rows']:,}) | "
              f"{hour:.1f} ({f['send_hour_rows']:,}) | {f['with_next_best']:.0%} | "
              f"{f['with_habit']:.0%} |")


if __name__ == "__main__":
    main()
