"""lifecycle_daily through Airflow (``dag.test``, as ``make demo`` runs it), one dbt mode
against the other on the same club and the same machine, in one run.

    .venv/bin/python bench/bench_daily_dag.py --customers 10000 --days 3 \\
        --modes one_build,one_task,per_model \\
        [--server-url postgresql://postgres@127.0.0.1:5432/postgres]

The club is generated once into a template database; each mode gets its own copy (CREATE
DATABASE ... TEMPLATE) and its own Airflow home, and runs the same consecutive days with the
logical clock. Prints the load average before each mode, the seconds of each day, the CPU
seconds of the run_daily process and its dbt subprocesses, and the outbox of each mode (the
same for every mode: the dbt graph is the same, only how it is invoked differs). Without
--server-url an embedded PostgreSQL is started and stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import psycopg
from bench_dbt import calibration  # this directory is on sys.path when run as a script

from lifecycle.airflow_env import airflow_env
from lifecycle.data.generator import generate
from lifecycle.settings import Settings
from lifecycle.warehouse.migrations import migrate
from lifecycle.warehouse.server import EmbeddedWarehouse

PROJECT = Path(__file__).resolve().parents[1]
RESULT_PREFIX = "@@lifecycle-day "


def _db(server_url: str, name: str, template: str | None = None) -> str:
    base = server_url.rsplit("/", 1)[0]
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')
        conn.execute(f'create database "{name}"' + (f' template "{template}"' if template else ""))
    return f"{base}/{name}"


def _drop(server_url: str, name: str) -> None:
    base = server_url.rsplit("/", 1)[0]
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')


def run_mode(url: str, mode: str, start: date, days: int, home: Path) -> list[dict]:
    env = {
        **os.environ,
        **airflow_env(url, Settings()),
        "LIFECYCLE_WAREHOUSE_URL": url,
        "LIFECYCLE_DBT_MODE": mode,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
    }
    proc = subprocess.run(
        [sys.executable, str(PROJECT / "scripts" / "run_daily.py"), start.isoformat(),
         str(days), "--clock", "logical"],
        env=env, capture_output=True, text=True, check=False,
    )
    lines = [json.loads(x[len(RESULT_PREFIX):]) for x in proc.stdout.splitlines()
             if x.startswith(RESULT_PREFIX)]
    if proc.returncode != 0:
        sys.exit(f"{mode}: run_daily failed\n{lines}\n{proc.stderr[-3000:]}")
    return lines


def outbox(url: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute("select plan_date, customer_id, phase, step, channel, status "
                            "from ops.outbox order by plan_date, customer_id").fetchall()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--start", type=date.fromisoformat, default=date(2026, 6, 1))
    parser.add_argument("--modes", default="one_build,per_model")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--server-url", default=os.environ.get("LIFECYCLE_TEST_WAREHOUSE_URL"))
    args = parser.parse_args()

    state = Path(tempfile.mkdtemp(prefix="bench-daily-dag-"))
    wh = None
    server = args.server_url
    if not server:
        wh = EmbeddedWarehouse(state / "pg")
        server = wh.up()
    template = "bench_daily_template"
    try:
        url = _db(server, template)
        # two fixed workloads: figures of different machines differ 2-3x for the same code
        print(calibration(url), flush=True)
        migrate(url)
        t0 = time.monotonic()
        generate(args.customers, date(2025, 1, 1), args.start + timedelta(days=args.days),
                 args.seed, url=url)
        print(f"club: {args.customers:,} customers generated in {time.monotonic() - t0:.1f} s")
        outboxes = {}
        for mode in args.modes.split(","):
            name = f"bench_daily_{mode}"
            murl = _db(server, name, template=template)
            load = os.getloadavg()
            t0 = time.monotonic()
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            lines = run_mode(murl, mode, args.start, args.days, state / f"airflow-{mode}")
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            wall = time.monotonic() - t0
            # CPU of run_daily and the dbt processes it started (not PostgreSQL's): less
            # sensitive than wall time to what else the machine runs
            cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            secs = [x["seconds"] for x in lines]
            print(f"{mode:>10}: load {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f} | days "
                  + ", ".join(f"{s:.1f}" for s in secs)
                  + f" s | sum {sum(secs):.1f} s | process {wall:.1f} s (DAG parse "
                  f"included), CPU {cpu:.1f} s",
                  flush=True)
            outboxes[mode] = outbox(murl)
            _drop(server, name)
        first, *others = outboxes.values()
        print(f"outbox: {len(first)} messages; the same in every mode: "
              f"{all(o == first for o in others)}")
        _drop(server, template)
    finally:
        if wh is not None:
            wh.down()
        shutil.rmtree(state, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
