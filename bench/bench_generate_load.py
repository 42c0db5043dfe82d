"""Benchmark: generate a synthetic club and load it, at several sizes.

For each size: pure generation (numpy + CSV bytes), writing the CSV files, the COPY fast
path (``generate(url=...)`` into a fresh database) and, up to ``--csv-load-max`` customers,
the validated CSV path (``load_dir`` into another fresh database). Prints rows per table and
seconds; measures, asserts nothing.

    .venv/bin/python bench/bench_generate_load.py --sizes 10k,100k,1M

The databases are created on the embedded server (or the one LIFECYCLE_WAREHOUSE_URL points
at) and dropped afterwards.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path

import psycopg

from lifecycle.data.contract import FILES
from lifecycle.data.generator import FILE_ORDER, generate
from lifecycle.data.loader import load_dir
from lifecycle.warehouse.migrations import migrate
from lifecycle.warehouse.server import resolve_url


def parse_size(text: str) -> int:
    text = text.strip().lower()
    factor = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
    return int(float(text.rstrip("km")) * factor)


def label(n: int) -> str:
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n >= 1_000 and n % 1_000 == 0:
        return f"{n // 1_000}k"
    return str(n)


@contextmanager
def fresh_database(server: str, prefix: str = "bench_", keep: bool = False) -> Iterator[str]:
    """A new migrated database on ``server`` named ``prefix`` + a random suffix; dropped
    afterwards unless ``keep``."""
    name = prefix + uuid.uuid4().hex[: 10 if prefix == "bench_" else 6]
    admin = server.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    url = server.rsplit("/", 1)[0] + "/" + name
    try:
        migrate(url)
        yield url
    finally:
        if not keep:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'drop database if exists "{name}" with (force)')


def table_rows(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        return {
            name: conn.execute(f"select count(*) from {FILES[name].table}").fetchone()[0]
            for name in FILE_ORDER
        }


def step(what: str, seconds: float, note: str = "") -> None:
    print(f"  {what:<44}{seconds:8.1f} s" + (f"  ({note})" if note else ""))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="10k,100k", help="customers per run, e.g. 10k,100k,1M")
    ap.add_argument("--start", type=date.fromisoformat, default=date(2025, 1, 1))
    ap.add_argument("--end", type=date.fromisoformat, default=date(2026, 6, 30))
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--csv-load-max", type=parse_size, default=100_000,
                    help="run load_dir (the validated CSV path) up to this many customers")
    ap.add_argument("--workdir", type=Path, default=None, help="where the CSVs go (temp dir)")
    args = ap.parse_args()
    sizes = [parse_size(s) for s in args.sizes.split(",")]

    server = resolve_url()
    with psycopg.connect(server) as conn:
        pg = conn.execute("show server_version").fetchone()[0]
    print(f"machine: {os.cpu_count()} cores (nproc), {platform.machine()}, "
          f"Python {platform.python_version()}, PostgreSQL {pg}, {time.strftime('%Y-%m-%d')}")
    print(f"period {args.start}..{args.end}, seed {args.seed}\n")

    summary = []
    for n in sizes:
        work = Path(tempfile.mkdtemp(prefix=f"bench_{label(n)}_", dir=args.workdir))
        try:
            gen = generate(n, args.start, args.end, args.seed)
            rows = gen.rows
            total = sum(rows.values())
            print(f"== {label(n)} customers: " + ", ".join(
                f"{k.removesuffix('.csv')} {v:,}" for k, v in rows.items()) + f" (total {total:,})")
            step("generate (numpy -> CSV bytes, in memory)", gen.seconds)

            csv_run = generate(n, args.start, args.end, args.seed, out_dir=work)
            size_mb = sum(p.stat().st_size for p in csv_run.files) / 1e6
            step(f"generate + write CSVs ({size_mb:,.0f} MB)", csv_run.seconds,
                 f"of which writing {csv_run.seconds_write:.1f} s")

            with fresh_database(server) as url:
                fast = generate(n, args.start, args.end, args.seed, url=url)
                loaded = table_rows(url)
            assert loaded == rows, (loaded, rows)
            step("generate + COPY fast path", fast.seconds,
                 f"waiting on the server {fast.seconds_load:.1f} s")

            slow = None
            if n <= args.csv_load_max:
                with fresh_database(server) as url:
                    slow = load_dir(url, work)
                    assert table_rows(url) == rows
                step("load_dir (validate + COPY + upsert)", slow.seconds,
                     f"{total / slow.seconds:,.0f} rows/s")
            print(f"  peak RSS so far {peak_rss_mb():,.0f} MB\n")
            summary.append((n, rows, gen.seconds, csv_run.seconds, size_mb, fast.seconds,
                            slow.seconds if slow else None))
        finally:
            shutil.rmtree(work, ignore_errors=True)

    print("| customers | memberships | visits | purchases | consents | generate s "
          "| generate + write CSV s (MB) | generate + COPY s | load_dir s |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n, rows, g, w, mb, f, s in summary:
        load = f"{s:.1f}" if s is not None else "-"
        print(f"| {n:,} | {rows['memberships.csv']:,} | {rows['visits.csv']:,} "
              f"| {rows['purchases.csv']:,} | {rows['consents.csv']:,} | {g:.1f} "
              f"| {w:.1f} ({mb:,.0f}) | {f:.1f} | {load} |")


if __name__ == "__main__":
    main()
