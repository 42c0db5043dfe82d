"""The command line on a real (throw-away) embedded server and real files."""

from __future__ import annotations

import json
import shutil
from datetime import date
from pathlib import Path

import psycopg
from click.testing import CliRunner

from lifecycle.cli import main as cli

PROJECT = Path(__file__).resolve().parents[2]


def test_embedded_warehouse_lifecycle(tmp_path):
    env = {"LIFECYCLE_HOME": str(tmp_path / "state"), "LIFECYCLE_WAREHOUSE_URL": None}
    run = CliRunner().invoke
    status = run(cli, ["warehouse", "status"], env=env)
    assert status.exit_code == 1 and "not initialised" in status.output
    up = run(cli, ["warehouse", "up"], env=env)
    assert up.exit_code == 0, up.output
    assert up.output.startswith("postgresql://postgres:***@127.0.0.1:")
    url = run(cli, ["warehouse", "url"], env=env).output.strip()
    with psycopg.connect(url) as conn:
        schemas = {
            r[0] for r in conn.execute("select schema_name from information_schema.schemata")
        }
    assert {"raw", "ops"} <= schemas
    assert "up, PostgreSQL 16" in run(cli, ["warehouse", "status"], env=env).output
    # idempotent: a second `up` finds it running on the same port
    assert run(cli, ["warehouse", "up"], env=env).output.strip() == up.output.strip()
    assert run(cli, ["warehouse", "down"], env=env).output.strip() == "stopped"
    down = run(cli, ["warehouse", "status"], env=env)
    assert down.exit_code == 1 and "down" in down.output


def test_load_rejects_a_bad_file_naming_where(fresh_db, tmp_path):
    from datetime import date

    from lifecycle.data.generator import generate

    generate(50, date(2025, 1, 1), date(2025, 6, 30), 3, out_dir=tmp_path)
    visits = tmp_path / "visits.csv"
    lines = visits.read_text().splitlines()
    cells = lines[3].split(",")
    cells[2] = "yesterday"
    lines[3] = ",".join(cells)
    visits.write_text("\n".join(lines) + "\n")
    result = CliRunner().invoke(
        cli, ["load", str(tmp_path)], env={"LIFECYCLE_WAREHOUSE_URL": fresh_db}
    )
    assert result.exit_code == 2
    assert "visits.csv" in result.output and "line 4" in result.output
    assert "visited_at" in result.output and "yesterday" in result.output
    with psycopg.connect(fresh_db) as conn:
        assert conn.execute("select count(*) from raw.customers").fetchone()[0] == 0


def test_rules_validate_exit_codes(tmp_path):
    good = CliRunner().invoke(cli, ["rules", "validate"])
    assert good.exit_code == 0
    assert "ok (5 enabled phases, 10 steps, 3 of them repetitions)" in good.output
    bad = tmp_path / "phases.yml"
    shutil.copy(PROJECT / "include/rules/phases.yml", bad)
    bad.write_text(bad.read_text().replace("visits_since_purchase, eq: 0", "visits_since, eq: 0"))
    result = CliRunner().invoke(cli, ["rules", "validate", str(bad)])
    assert result.exit_code == 1
    assert f"{bad}:" in result.output and "did you mean 'visits_since_purchase'" in result.output
    assert "1 error(s)" in result.output


# --------------------------------------------------------------------------- the first hour

D = date(2026, 6, 30)  # a past day: the wall clock does not plan it


def _invoke(url: str, *args: str):
    return CliRunner().invoke(cli, list(args), env={"LIFECYCLE_WAREHOUSE_URL": url})


def _count(url: str, query: str, params: tuple = ()) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute(query, params).fetchone()[0]


def test_commands_on_an_empty_warehouse_say_what_to_run(fresh_db):
    run = _invoke(fresh_db, "run", "--date", D.isoformat(), "--clock", "logical")
    assert run.exit_code == 2, run.output
    assert "nothing loaded" in run.output and "lifecycle demo" in run.output
    build = _invoke(fresh_db, "build", "--date", D.isoformat())
    assert build.exit_code == 2 and "raw.customers is empty" in build.output
    # nothing was started: no dbt build, no plan recorded
    assert _count(fresh_db, "select count(*) from ops.runs") == 0
    listed = _invoke(fresh_db, "outbox", "--date", D.isoformat())
    assert listed.exit_code == 1
    assert f"{D} was never planned" in listed.output and "lifecycle run" in listed.output


def test_build_then_a_past_day_on_each_clock(fresh_db):
    from lifecycle.data.generator import generate

    generate(300, date(2025, 1, 1), D, 5, url=fresh_db)
    built = _invoke(fresh_db, "build", "--date", D.isoformat())
    assert built.exit_code == 0, built.output
    assert _count(fresh_db, "select count(*) from analytics.customer_facts "
                  "where as_of_date = %s", (D,)) == 300
    # build plans and sends nothing
    assert _count(fresh_db, "select count(*) from ops.outbox") == 0
    assert _count(fresh_db, "select count(*) from ops.runs where step = 'dbt_build' "
                  "and status = 'ok'") == 1

    # Wall clock, a day whose send window has passed: not planned, as the DAG's catch-up.
    wall = _invoke(fresh_db, "run", "--date", D.isoformat(), "--no-build")
    assert wall.exit_code == 0, wall.output
    assert "not planned" in wall.output and "--clock logical" in wall.output
    assert _count(fresh_db, "select count(*) from ops.outbox") == 0
    assert _count(fresh_db, "select count(*) from ops.skips") == 0
    assert _count(fresh_db, "select count(*) from ops.runs where step = 'plan' "
                  "and status = 'skipped' and plan_date = %s", (D,)) == 1
    listed = _invoke(fresh_db, "outbox", "--date", D.isoformat())
    assert listed.exit_code == 1 and "not planned" in listed.output

    # Logical clock: the day replayed; a human summary per phase that matches the outbox.
    replay = _invoke(fresh_db, "run", "--date", D.isoformat(), "--no-build", "--clock", "logical")
    assert replay.exit_code == 0, replay.output
    with psycopg.connect(fresh_db) as conn:
        sent = dict(conn.execute("select phase, count(*) from ops.outbox where plan_date = %s "
                                 "and status = 'sent' group by 1", (D,)).fetchall())
        total = conn.execute("select count(*) from ops.outbox").fetchone()[0]
        calls = conn.execute("select count(*) from ops.outbox where channel = 'call'").fetchone()[0]
    assert sent and sum(sent.values()) == total - calls  # calls wait for the front desk
    lines = {ln.split()[0]: ln.split() for ln in replay.output.splitlines() if ln.strip()}
    for phase, n in sent.items():
        assert int(lines[phase][3]) == n, replay.output  # phase eligible planned sent ...
    assert f"planned {total} message(s)" in replay.output
    assert not replay.output.lstrip().startswith("{")

    # --json keeps the shape scripts read; a rerun inserts nothing
    again = _invoke(fresh_db, "run", "--date", D.isoformat(), "--no-build", "--clock", "logical",
                    "--json")
    assert again.exit_code == 0, again.output
    report = json.loads(again.output)
    assert report["plan"]["inserted_messages"] == 0 and report["dispatch"]["claimed"] == 0
    assert _invoke(fresh_db, "outbox", "--date", D.isoformat()).exit_code == 0

    # preview and diff on facts that hold nobody: say so, non-zero
    with psycopg.connect(fresh_db) as conn:
        conn.execute("truncate analytics.customer_facts")
    preview = _invoke(fresh_db, "preview", "--date", D.isoformat())
    assert preview.exit_code == 2 and "customer_facts is empty" in preview.output
    assert f"lifecycle build --date {D}" in preview.output
    rules = str(PROJECT / "include/rules/phases.yml")
    diff = _invoke(fresh_db, "rules", "diff", rules, rules, "--date", D.isoformat())
    assert diff.exit_code == 2 and "customer_facts is empty" in diff.output


def test_the_demo_takes_the_warehouse_but_not_other_data(fresh_db):
    from lifecycle.data.generator import generate
    from lifecycle.demo import DEMO_MARK, replace_database

    generate(20, date(2025, 1, 1), date(2025, 3, 1), 1, url=fresh_db)
    refused = _invoke(fresh_db, "demo", "--customers", "50", "--days", "1")
    assert refused.exit_code == 1
    said = " ".join(refused.output.split())  # rich wraps lines
    assert "holds data the demo did not make" in said
    assert "raw.customers" in said and "--replace" in said
    assert _count(fresh_db, "select count(*) from raw.customers") == 20  # untouched

    # --replace (here: the function behind it) wipes it and marks it as the demo's ...
    assert replace_database(fresh_db, replace=True) == fresh_db
    with psycopg.connect(fresh_db) as conn:
        comment = conn.execute("select shobj_description(oid, 'pg_database') from pg_database "
                               "where datname = current_database()").fetchone()[0]
        tables = conn.execute("select count(*) from pg_tables where schemaname = 'raw'")
        assert comment == DEMO_MARK and tables.fetchone()[0] == 0
    # ... so the next demo replaces what a demo loaded without asking
    from lifecycle.warehouse.migrations import migrate

    migrate(fresh_db)
    generate(20, date(2025, 1, 1), date(2025, 3, 1), 1, url=fresh_db)
    replace_database(fresh_db)
    assert _count(fresh_db, "select count(*) from pg_tables where schemaname = 'raw'") == 0
