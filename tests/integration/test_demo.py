"""`lifecycle demo` end to end at a small size: the club, the daily DAG through Airflow for two
days, the provider reports, the AS IS vs TO BE simulation (run beside the days, in its own
process and databases) and the report that reads it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

pytestmark = pytest.mark.slow


def test_the_demo_runs_its_days_and_the_simulation_beside_them(fresh_db, tmp_path):
    env = {**os.environ, "LIFECYCLE_WAREHOUSE_URL": fresh_db, "LIFECYCLE_HOME": str(tmp_path)}
    exe = Path(sys.executable).parent / "lifecycle"
    run = subprocess.run([str(exe), "demo", "--customers", "80", "--days", "2"], env=env,
                         capture_output=True, text=True, timeout=900, check=False)
    said = " ".join(run.stdout.split())  # rich wraps lines
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "simulate AS IS (blast) vs TO BE (lifecycle): 80 customers, 45 days" in said
    assert "beside the Airflow days" in said and "waiting for the simulation" in said
    # below the days in the CPU's queue, as the OS reported it back
    nice = re.search(r"\(simulate, beside the days at nice (\d+),", said)
    assert nice and int(nice[1]) == 19, said[-1500:]
    with psycopg.connect(fresh_db) as conn:
        days = conn.execute("select count(distinct plan_date) from ops.outbox").fetchone()[0]
        sims = conn.execute("select customers, days, results -> 'policies' ? 'lifecycle', "
                            "results -> 'policies' ? 'blast' from ops.simulations").fetchall()
        # the simulation's own databases are gone with it
        left = conn.execute("select count(*) from pg_database "
                            "where datname like 'lifecycle_sim_%'").fetchone()[0]
    assert days == 2
    assert sims == [(80, 45, True, True)]
    assert left == 0
    reports = list((tmp_path / "reports").glob("lifecycle-*.html"))
    assert any(p.name == "lifecycle-2026-06-29-2026-06-30.html" for p in reports), reports
