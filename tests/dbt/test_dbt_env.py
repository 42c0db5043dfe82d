"""How lifecycle.transform.dbt turns a warehouse URL and settings into dbt's environment and
arguments."""

from __future__ import annotations

import json
from datetime import date

import psycopg
import pytest

from lifecycle.settings import Settings
from lifecycle.transform.dbt import _with_vars, dbt_env, dbt_executable


def test_dbt_env_parses_the_url_into_profile_variables() -> None:
    settings = Settings(dbt_schema="marts_x", dbt_threads=4, club_timezone="Europe/Warsaw")

    env = dbt_env("postgresql://svc%40club:p%3Ass%2Fw@db.example.com:6543/warehouse", settings)

    assert env["LIFECYCLE_PG_HOST"] == "db.example.com"
    assert env["LIFECYCLE_PG_PORT"] == "6543"
    assert env["LIFECYCLE_PG_USER"] == "svc@club"
    assert env["LIFECYCLE_PG_PASSWORD"] == "p:ss/w"
    assert env["LIFECYCLE_PG_DBNAME"] == "warehouse"
    assert env["LIFECYCLE_DBT_SCHEMA"] == "marts_x"
    assert env["LIFECYCLE_DBT_THREADS"] == "4"
    assert env["LIFECYCLE_CLUB_TIMEZONE"] == "Europe/Warsaw"
    assert env["DBT_PROFILES_DIR"] == str(settings.dbt_project_dir)
    assert env["DBT_SEND_ANONYMOUS_USAGE_STATS"] == "False"
    assert env["DO_NOT_TRACK"] == "1"
    assert "LIFECYCLE_PG_SSLMODE" not in env


def test_dbt_env_defaults_port_and_passes_sslmode() -> None:
    env = dbt_env("postgresql://u@localhost/db?sslmode=require", Settings())

    assert (env["LIFECYCLE_PG_PORT"], env["LIFECYCLE_PG_PASSWORD"]) == ("5432", "")
    assert env["LIFECYCLE_PG_SSLMODE"] == "require"


def test_dbt_env_rejects_a_url_without_database() -> None:
    with pytest.raises(ValueError, match="names no database"):
        dbt_env("postgresql://u@localhost:5432", Settings())


def test_as_of_is_added_as_a_var_or_merged_into_given_vars() -> None:
    assert _with_vars(["build"], None) == ["build"]
    assert _with_vars(["build"], date(2024, 6, 30)) == [
        "build",
        "--vars",
        json.dumps({"as_of_date": "2024-06-30"}),
    ]
    merged = _with_vars(["run", "--vars", "{default_consent: false}"], date(2024, 6, 30))
    assert merged[:2] == ["run", "--vars"]
    assert json.loads(merged[2]) == {"default_consent": False, "as_of_date": "2024-06-30"}


def test_the_dbt_project_and_executable_are_where_run_dbt_looks() -> None:
    settings = Settings()

    assert (settings.dbt_project_dir / "dbt_project.yml").is_file()
    assert (settings.dbt_project_dir / "profiles.yml").is_file()
    assert dbt_executable().is_file()


def test_dbt_sessions_get_their_options_after_the_given_ones(monkeypatch) -> None:
    """JIT off and the build's memory unless asked otherwise; an option given in PGOPTIONS
    is kept as given (maintenance_work_mem does not count as work_mem)."""
    url = "postgresql://u@h/db"
    monkeypatch.setenv("PGOPTIONS", "-c statement_timeout=0")
    assert dbt_env(url, Settings())["PGOPTIONS"] == (
        "-c statement_timeout=0 -c jit=off -c work_mem=64MB -c maintenance_work_mem=256MB")
    assert dbt_env(url, Settings(dbt_jit=True, dbt_work_mem="1 GB",
                                 dbt_maintenance_work_mem=""))["PGOPTIONS"] == (
        "-c statement_timeout=0 -c work_mem=1GB")
    monkeypatch.setenv("PGOPTIONS", "-c maintenance_work_mem=1GB -c jit=on")
    assert dbt_env(url, Settings())["PGOPTIONS"] == (
        "-c maintenance_work_mem=1GB -c jit=on -c work_mem=64MB")
    monkeypatch.delenv("PGOPTIONS")
    assert "PGOPTIONS" not in dbt_env(url, Settings(dbt_jit=True, dbt_work_mem="",
                                                    dbt_maintenance_work_mem=""))


def test_a_memory_size_without_a_unit_is_kept_as_postgresql_reads_it() -> None:
    assert Settings(dbt_work_mem="64").dbt_work_mem == "64"  # kB


@pytest.mark.parametrize("value", ["lots", "64 MiB", "-1MB"])
def test_a_memory_setting_that_is_not_a_size_names_the_variable(value: str) -> None:
    with pytest.raises(ValueError, match="LIFECYCLE_DBT_WORK_MEM: .* expected a number with"):
        Settings(dbt_work_mem=value)


@pytest.mark.parametrize("jit", [False, True])
def test_the_session_dbt_opens_has_jit_and_memory_as_set(fresh_db: str, jit: bool) -> None:
    """Through dbt's own connection (dbt show, in process): jit is off in its session by
    default, and the server's setting (on) with LIFECYCLE_DBT_JIT=true; work_mem and
    maintenance_work_mem as set, the server's when empty."""
    from lifecycle.pipeline import rules_for_dbt
    from lifecycle.transform.dbt_vars import VAR_NAME
    from lifecycle.transform.inprocess import InProcessDbt

    memory = {"dbt_work_mem": "", "dbt_maintenance_work_mem": ""} if jit else {
        "dbt_work_mem": "48MB", "dbt_maintenance_work_mem": "96MB"}
    settings = Settings(dbt_jit=jit, **memory)
    with psycopg.connect(fresh_db) as conn:
        server = conn.execute("select current_setting('work_mem'), "
                              "current_setting('maintenance_work_mem')").fetchone()
    runner = InProcessDbt(fresh_db, settings, {VAR_NAME: rules_for_dbt(settings)})
    shown = runner.invoke("show", date(2026, 6, 30), "--inline",
                          "select current_setting('jit') as jit, current_setting('work_mem') "
                          "as w, current_setting('maintenance_work_mem') as m")
    assert shown.success, shown.exception
    (table,) = [r.agate_table for r in shown.result.results]
    assert [(row["jit"], row["w"], row["m"]) for row in table.rows] == [
        ("on", *server) if jit else ("off", "48MB", "96MB")]
