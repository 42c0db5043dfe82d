"""The command line on a real (throw-away) embedded server and real files."""

from __future__ import annotations

import shutil
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
    assert good.exit_code == 0 and "ok (5 enabled phases, 7 steps)" in good.output
    bad = tmp_path / "phases.yml"
    shutil.copy(PROJECT / "include/rules/phases.yml", bad)
    bad.write_text(bad.read_text().replace("visits_since_purchase, eq: 0", "visits_since, eq: 0"))
    result = CliRunner().invoke(cli, ["rules", "validate", str(bad)])
    assert result.exit_code == 1
    assert f"{bad}:" in result.output and "did you mean 'visits_since_purchase'" in result.output
    assert "1 error(s)" in result.output
