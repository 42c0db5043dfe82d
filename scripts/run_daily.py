"""Run the lifecycle_daily DAG through Airflow (``dag.test``) for consecutive logical dates.

Used by ``lifecycle demo`` and the integration tests; this file, not the package, imports
Airflow (docs/architecture.md #7). Prints one line per day on stdout, ``RESULT_PREFIX`` then JSON:
{"date": ..., "state": ..., "counts": {...}, "seconds": ...}; Airflow's and dbt's own log lines
are interleaved on the same streams, hence the prefix. Exit status 1 if a day failed.

Usage: python scripts/run_daily.py START_DATE DAYS [--clock wall|logical]
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

RESULT_PREFIX = "@@lifecycle-day "
FULL_COLLECTION_DAYS = 7  # days between collections of everything the process holds


def _emit(obj: dict) -> None:
    print(RESULT_PREFIX + json.dumps(obj), flush=True)


def _migrate_metadata() -> None:
    """Migrate the Airflow metadata database once per home. A SQLite one is copied from the
    template a first migration left (lifecycle.airflow_env.metadata_template): the demo and
    each DAG test start a fresh home, and `airflow db migrate` costs ~8 s of CPU."""
    from lifecycle.airflow_env import metadata_template

    marker = Path(os.environ["AIRFLOW_HOME"]) / ".migrated"
    if marker.exists():
        return
    conn = os.environ.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "")
    db = Path(conn.removeprefix("sqlite:///")) if conn.startswith("sqlite:///") else None
    template = metadata_template()
    if db is not None and not db.exists() and template.exists():
        shutil.copyfile(template, db)
    else:
        subprocess.run(
            [str(Path(sys.executable).parent / "airflow"), "db", "migrate"],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        if db is not None and not template.exists():
            template.parent.mkdir(parents=True, exist_ok=True)
            partial = template.with_suffix(f".{os.getpid()}.tmp")
            shutil.copyfile(db, partial)
            os.replace(partial, template)  # another run copying at once sees all or nothing
    marker.touch()


def _record_wall_clock_start(run, started: datetime) -> None:
    """dag.test() records a run as started at its logical date (it creates the run with
    ``start_date=logical_date``), while its end is the wall clock: the UI showed a replayed
    past day lasting days ("6d17:12:27"). Record when the run really started."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import update

    if run is None:
        return
    with create_session() as session:
        session.execute(
            update(DagRun)
            .where(DagRun.dag_id == run.dag_id, DagRun.run_id == run.run_id)
            .values(start_date=started)
            .execution_options(synchronize_session=False)
        )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("start", type=date.fromisoformat)
    parser.add_argument("days", type=int)
    parser.add_argument("--clock", default="logical", choices=["wall", "logical"])
    parser.add_argument("--dag-id", default="lifecycle_daily")
    args = parser.parse_args()

    Path(os.environ["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    _migrate_metadata()
    # Task logs would drown the progress output; they stay in AIRFLOW_HOME/logs.
    if not os.environ.get("LIFECYCLE_VERBOSE"):
        logging.disable(logging.INFO)  # warnings and errors still reach the log

    from airflow.dag_processing.dagbag import DagBag

    from lifecycle.insight.report import day_counts

    bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    if bag.import_errors:
        _emit({"error": "dag import errors", "detail": bag.import_errors})
        return 1
    dag = bag.dags[args.dag_id]
    gc.collect()
    gc.freeze()  # the parsed DagBag and imports live for the whole run: keep them out of gc
    # Fail fast here: dag.test() would wait out each retry delay (minutes) in-process.
    for task in dag.tasks:
        task.retries = 0
    url = os.environ["AIRFLOW_CONN_LIFECYCLE_WAREHOUSE"]
    failed = False
    for i in range(args.days):
        day = args.start + timedelta(days=i)
        logical = datetime(day.year, day.month, day.day, 5, tzinfo=UTC)
        t0 = time.monotonic()
        started = datetime.now(UTC)
        run = dag.test(logical_date=logical, run_after=logical, run_conf={"clock": args.clock})
        _record_wall_clock_start(run, started)
        state = str(getattr(run, "state", "unknown"))
        line = {"date": day.isoformat(), "state": state, "seconds": round(time.monotonic() - t0, 2)}
        line["counts"] = day_counts(url, day)
        _emit(line)
        # Cosmos runs gc.collect() after every dbt invocation; in one long process the heap
        # (and so each collection) grows day by day. Freezing what survived a day keeps later
        # collections small: measured 13 s -> 25 s per day over 30 days without it. A full
        # collection walks the ~850,000 frozen objects too (0.5-0.7 s), so it runs once a
        # week, to free what was frozen one day and died later (~100,000 objects a day).
        if (i + 1) % FULL_COLLECTION_DAYS == 0:
            gc.unfreeze()
        gc.collect()
        gc.freeze()
        if state != "success":
            failed = True
            break
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
