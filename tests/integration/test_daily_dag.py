"""lifecycle_daily through real Airflow (dag.test) and real dbt on generated data."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner
from psycopg import sql

from lifecycle.airflow_env import airflow_env
from lifecycle.cli import main as cli
from lifecycle.data.generator import generate
from lifecycle.rules.loading import load_rules
from lifecycle.settings import Settings

pytestmark = pytest.mark.slow

PROJECT = Path(__file__).resolve().parents[2]
RESULT_PREFIX = "@@lifecycle-day "
D1 = date(2026, 5, 20)


@pytest.fixture(scope="module")
def migrated_airflow_db(tmp_path_factory) -> Path:
    """An Airflow metadata database (SQLite) migrated once for the module's four runs: each
    copies it (`airflow db migrate` is ~8 s of CPU, over a minute on a busy machine)."""
    home = tmp_path_factory.mktemp("airflow-migrated")
    env = {**os.environ, "AIRFLOW_HOME": str(home),
           "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}"}
    subprocess.run([str(Path(sys.executable).parent / "airflow"), "db", "migrate"], env=env,
                   check=True, capture_output=True, timeout=600)
    return home / "airflow.db"


def new_airflow_home(path: Path, migrated: Path) -> Path:
    """A fresh AIRFLOW_HOME holding a copy of the migrated metadata database; the marker tells
    scripts/run_daily.py it is migrated."""
    path.mkdir(parents=True)
    shutil.copyfile(migrated, path / "airflow.db")
    (path / ".migrated").touch()
    return path


def run_daily(url: str, start: date, days: int, airflow_home: Path,
              expect_success: bool = True, clock: str = "logical",
              output: list[str] | None = None) -> list[dict]:
    env = {
        **os.environ,
        **airflow_env(url, Settings()),
        "LIFECYCLE_WAREHOUSE_URL": url,
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{airflow_home / 'airflow.db'}",
    }
    proc = subprocess.run(
        [
            sys.executable,
            str(PROJECT / "scripts" / "run_daily.py"),
            start.isoformat(),
            str(days),
            "--clock",
            clock,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    lines = [
        json.loads(x[len(RESULT_PREFIX) :])
        for x in proc.stdout.splitlines()
        if x.startswith(RESULT_PREFIX)
    ]
    assert (proc.returncode == 0) is expect_success, (lines, proc.stdout[-3000:],
                                                       proc.stderr[-3000:])
    if output is not None:
        output.append(proc.stdout + proc.stderr)
    return lines


def _outbox(url: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "select plan_date, customer_id, phase, step, cycle_key, channel, status, message_key "
            "from ops.outbox order by outbox_id"
        ).fetchall()


@pytest.fixture(scope="module")
def club_url(server_url, tmp_path_factory):
    # a name of its own: xdist workers (or other runs) may share LIFECYCLE_TEST_WAREHOUSE_URL
    name = "daily_dag_" + uuid.uuid4().hex[:10]
    base = server_url.rsplit("/", 1)[0]
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    url = f"{base}/{name}"
    generate(3000, date(2025, 3, 1), D1 + timedelta(days=2), 7, url=url)
    yield url
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')


def test_daily_dag_plans_and_sends_each_day_once(club_url, tmp_path, migrated_airflow_db):
    url = club_url
    lines = run_daily(url, D1, 2, new_airflow_home(tmp_path / "airflow", migrated_airflow_db))
    assert [(x["date"], x["state"]) for x in lines] == [
        (D1.isoformat(), "success"),
        ((D1 + timedelta(days=1)).isoformat(), "success"),
    ]

    # one XCom per task that returns something: a dict is not also pushed key by key (the
    # build's would be one XCom per dbt node, each an execution-API call nothing reads)
    with sqlite3.connect(tmp_path / "airflow" / "airflow.db") as meta:
        keys = {k for (k,) in meta.execute(
            "select distinct key from xcom where dag_id = 'lifecycle_daily'")}
        build_xcoms = meta.execute("select count(*) from xcom where dag_id = 'lifecycle_daily' "
                                   "and task_id = 'dbt.build'").fetchone()[0]
    assert keys == {"return_value"} and build_xcoms == 2, (keys, build_xcoms)

    rows = _outbox(url)
    assert len(rows) > 50, "3000 members should give more than 50 lifecycle messages in two days"
    assert {r[0] for r in rows} == {D1, D1 + timedelta(days=1)}
    assert {r[2] for r in rows} <= {
        "activation",
        "stimulation",
        "cross_sell",
        "retention",
        "return",
        "keep_alive",
    }
    # every message went out, but the calls: they wait for the front desk (never dispatched)
    sent = [r for r in rows if r[5] != "call"]
    assert {r[6] for r in sent} == {"sent"}
    assert {r[6] for r in rows if r[5] == "call"} <= {"planned"}
    # one message per customer per day, one per (customer, phase, step, membership)
    assert len({(r[0], r[1]) for r in rows}) == len(rows)
    assert len({(r[1], r[2], r[3], r[4]) for r in rows}) == len(rows)
    with psycopg.connect(url) as conn:
        recorded = conn.execute(
            "select count(*), count(distinct outbox_id) from ops.sandbox_messages"
        ).fetchone()
        skips = dict(conn.execute("select reason, count(*) from ops.skips group by 1").fetchall())
        # every phase message of day 2 goes to a customer the rules select as of day 2 (the
        # mart is built for the last day run); keep-alive picks by contact history, not by a
        # phase's condition (tests/integration/test_keep_alive.py)
        rules = load_rules(Settings().rules_path)
        day2 = {(r[1], r[2], r[3]) for r in rows
                if r[0] == D1 + timedelta(days=1) and r[2] != "keep_alive"}
        selected = set()
        for phase in rules.phases:
            for step in phase.steps:
                q = sql.SQL("select customer_id from analytics.customer_facts where {}").format(
                    step.condition.sql
                )
                selected |= {
                    (c, phase.name, step.number) for (c,) in conn.execute(q, step.condition.params)
                }
    assert recorded == (len(sent), len(sent))
    assert day2 and day2 <= selected
    assert skips.get("control_group", 0) > 0 and skips.get("already_sent", 0) > 0

    # Re-running day 1 (a retry, a manual rerun) changes nothing.
    run_daily(url, D1, 1, new_airflow_home(tmp_path / "airflow-rerun", migrated_airflow_db))
    assert _outbox(url) == rows

    # `lifecycle outbox --json` lists day 1's messages and skips.
    result = CliRunner().invoke(
        cli, ["outbox", "--date", D1.isoformat(), "--json"], env={"LIFECYCLE_WAREHOUSE_URL": url}
    )
    assert result.exit_code == 0, result.output
    listed = json.loads(result.output)
    day1 = [r for r in sent if r[0] == D1]
    assert len([x for x in listed if x["status"] == "sent"]) == len(day1)
    assert {x["reason"] for x in listed if x["status"] == "skipped"} >= {"control_group"}
    assert {"customer_id", "phase", "step", "channel", "status"} <= set(listed[0])


def test_cli_run_does_the_same_work_as_the_dag(club_url):
    day = D1 + timedelta(days=2)
    result = CliRunner().invoke(
        cli,
        ["run", "--date", day.isoformat(), "--clock", "logical", "--json"],
        env={"LIFECYCLE_WAREHOUSE_URL": club_url},
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    rows = [r for r in _outbox(club_url) if r[0] == day]
    assert report["plan"]["inserted_messages"] == len(rows) > 0
    # calls are not dispatched: the front desk makes them
    assert report["dispatch"]["outcomes"] == {"sent": len([r for r in rows if r[5] != "call"])}


def test_a_failing_dbt_test_stops_planning_and_sending(fresh_db, tmp_path, migrated_airflow_db,
                                                      monkeypatch):
    """LIFECYCLE_DBT_MODE=one_build: the failing model's own task fails (it builds the model
    with its tests again, and they fail again), the task of every model after it is
    upstream_failed, and nothing is planned or sent."""
    monkeypatch.setenv("LIFECYCLE_DBT_MODE", "one_build")
    url = fresh_db
    generate(500, date(2025, 3, 1), D1, 3, url=url)
    _bad_membership(url, D1)
    home = new_airflow_home(tmp_path / "airflow", migrated_airflow_db)
    lines = run_daily(url, D1, 1, home, expect_success=False)
    assert [(x["date"], x["state"]) for x in lines] == [(D1.isoformat(), "failed")]
    tasks = dict(sqlite3.connect(home / "airflow.db").execute(
        "select task_id, state from task_instance where dag_id = 'lifecycle_daily'"))
    assert tasks["dbt.build"] == "success"  # the build ran; its results name the failure
    assert tasks["dbt.stg_club__memberships_model_build"] == "failed"
    assert tasks["dbt.stg_club__customers_model_build"] == "success"
    assert tasks["dbt.customer_facts_model_build"] == "upstream_failed"
    assert tasks["plan"] == "upstream_failed"
    with psycopg.connect(url) as conn:
        outbox = conn.execute("select count(*) from ops.outbox").fetchone()[0]
        skips = conn.execute("select count(*) from ops.skips").fetchone()[0]
        sandbox = conn.execute("select count(*) from ops.sandbox_messages").fetchone()[0]
        plans = conn.execute("select count(*) from ops.runs where step like 'plan%'").fetchone()[0]
    assert (outbox, skips, sandbox, plans) == (0, 0, 0, 0)


def _bad_membership(url: str, on: date) -> None:
    """A membership that ends before it starts: the checks of stg_club__memberships fail."""
    with psycopg.connect(url) as conn:
        customer = conn.execute("select min(customer_id) from raw.customers").fetchone()[0]
        conn.execute(
            "insert into raw.memberships (membership_id, customer_id, product, purchased_on, "
            "starts_on, ends_on, price, status) values ('BAD-1', %s, 'year', %s, %s, %s, 100, "
            "'active')", (customer, on, on, on - timedelta(days=1)))


def test_one_task_mode_records_each_model_as_an_asset_event_and_a_failure_stops_planning(
        fresh_db, tmp_path, migrated_airflow_db, monkeypatch):
    """LIFECYCLE_DBT_MODE=one_task: the day's dbt build is one task and no task per model.
    A day that builds gives every model and seed an Asset event (its date and dbt's status)
    and plans; the next day a failing check fails dbt.build, naming the model, and nothing
    is planned for it."""
    from lifecycle.transform.day_build import graph
    from lifecycle.transform.dbt import ensure_manifest

    monkeypatch.setenv("LIFECYCLE_DBT_MODE", "one_task")
    url = fresh_db
    generate(500, date(2025, 3, 1), D1 + timedelta(days=1), 3, url=url)
    home = new_airflow_home(tmp_path / "airflow", migrated_airflow_db)
    assert run_daily(url, D1, 1, home)[0]["state"] == "success"
    _bad_membership(url, D1 + timedelta(days=1))
    out: list[str] = []
    lines = run_daily(url, D1 + timedelta(days=1), 1, home, expect_success=False, output=out)
    assert [x["state"] for x in lines] == ["failed"]
    assert "models did not build: stg_club__memberships: a test failed" in out[0]
    db = sqlite3.connect(home / "airflow.db")
    tasks = {(run, task): state for run, task, state in db.execute(
        "select r.logical_date, t.task_id, t.state from task_instance t join dag_run r "
        "on r.run_id = t.run_id and r.dag_id = t.dag_id where t.dag_id = 'lifecycle_daily'")}
    dbt_tasks = {task for _, task in tasks if task.startswith("dbt.")}
    assert dbt_tasks == {"dbt.build"}  # no task per model
    second = max(run for run, _ in tasks)
    assert (tasks[(second, "dbt.build")], tasks[(second, "plan")]) == (
        "failed", "upstream_failed")
    events = db.execute("select a.name, e.extra from asset_event e join asset a "
                        "on a.id = e.asset_id where a.name like 'dbt.analytics.%'").fetchall()
    nodes = graph(ensure_manifest(Settings()))
    assert sorted(name for name, _ in events) == sorted(f"dbt.analytics.{n}" for n in nodes)
    assert {json.loads(extra)["as_of"] for _, extra in events} == {D1.isoformat()}
    with psycopg.connect(url) as conn:
        planned = conn.execute("select distinct plan_date from ops.runs "
                               "where step like 'plan%' order by 1").fetchall()
    assert planned == [(D1,)]


def test_a_day_older_than_the_catch_up_bound_builds_plans_and_sends_nothing(
    fresh_db, tmp_path, migrated_airflow_db
):
    """A first deploy from an old start date (or a long outage): with the wall clock, a day more
    than LIFECYCLE_DAILY_CATCHUP_DAYS (default 3) before today stops at the first task. Without
    the bound it ran the whole dbt build (and its plan was skipped as stale)."""
    old = datetime.now(UTC).date() - timedelta(days=4)
    generate(300, old - timedelta(days=400), old, 5, url=fresh_db)
    lines = run_daily(fresh_db, old, 1, new_airflow_home(tmp_path / "airflow", migrated_airflow_db),
                      clock="wall")
    assert [(x["date"], x["state"]) for x in lines] == [(old.isoformat(), "success")]
    with psycopg.connect(fresh_db) as conn:
        runs = conn.execute("select plan_date, step, status from ops.runs").fetchall()
        built = conn.execute("select count(*) from information_schema.tables "
                             "where table_schema = 'analytics'").fetchone()[0]
        outbox = conn.execute("select count(*) from ops.outbox").fetchone()[0]
    assert runs == [(old, "catchup", "skipped")]
    assert (built, outbox) == (0, 0)


def test_the_catch_up_bound_counts_whole_days_before_today(fresh_db):
    from lifecycle.operations import skip_old_run

    today = date(2026, 12, 6)
    three = Settings(daily_catchup_days=3)
    assert skip_old_run(fresh_db, today - timedelta(days=3), today, three) is None
    why = skip_old_run(fresh_db, today - timedelta(days=4), today, three)
    assert why is not None and "LIFECYCLE_DAILY_CATCHUP_DAYS=3" in why
    none = Settings(daily_catchup_days=0)
    assert skip_old_run(fresh_db, today, today, none) is None
    assert skip_old_run(fresh_db, today - timedelta(days=1), today, none) is not None
    with psycopg.connect(fresh_db) as conn:
        rows = conn.execute("select plan_date, step, status, summary->>'reason' from ops.runs "
                            "order by run_id").fetchall()
    assert [r[:3] for r in rows] == [(today - timedelta(days=4), "catchup", "skipped"),
                                     (today - timedelta(days=1), "catchup", "skipped")]
    assert rows[0][3] == why
