"""lifecycle_daily: one logical day = validate rules -> dbt build (Cosmos) -> plan -> dispatch.

Wiring only: every task body is one call into the ``lifecycle`` package. The warehouse is the
Airflow connection ``lifecycle_warehouse`` (a PostgreSQL URI); dbt gets it through Cosmos'
profile mapping, the Python tasks through ``Connection.get``. ``validate_rules`` returns the
phases as the dbt var ``lifecycle_phases``; the dbt tasks template it from that XCom.
"""

from __future__ import annotations

import os
import sys
from datetime import timedelta
from pathlib import Path

import pendulum
from airflow.sdk import Connection, Param, dag, get_current_context, task
from cosmos import (
    DbtTaskGroup,
    ExecutionConfig,
    ProfileConfig,
    ProjectConfig,
    RenderConfig,
)
from cosmos.constants import InvocationMode, LoadMode, TestBehavior
from cosmos.profiles import PostgresUserPasswordProfileMapping

from lifecycle.settings import get_settings

CONN_ID = os.environ.get("LIFECYCLE_WAREHOUSE_CONN_ID", "lifecycle_warehouse")
SETTINGS = get_settings()  # environment only: no database, network or files touched here
CHANNELS = ["sms", "email"]
# Rendered when a dbt task runs: validate_rules' XCom, the JSON lifecycle.dbt_vars generates.
PHASES_FROM_VALIDATE_RULES = "{{ ti.xcom_pull(task_ids='validate_rules') }}"


def _warehouse_url() -> str:
    return Connection.get(CONN_ID).get_uri()


def _plan_date():
    return get_current_context()["logical_date"].date()


@dag(
    dag_id="lifecycle_daily",
    description="Plan and send the day's lifecycle messages",
    schedule="0 5 * * *",
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    # Days run in order: caps and 'already sent' read the days before.
    max_active_runs=1,
    default_args={
        "owner": "lifecycle",
        "retries": 2,
        "retry_delay": timedelta(minutes=5),
        "execution_timeout": timedelta(hours=2),
    },
    params={
        "clock": Param(
            "wall",
            enum=["wall", "logical"],
            description="wall: send what is due now; logical: replay the day (demo, backfill)",
        ),
    },
    tags=["lifecycle", "daily"],
)
def lifecycle_daily():
    @task
    def validate_rules() -> str:
        """The rules file's phases as the dbt var lifecycle_phases (small JSON, fine for XCom)."""
        from lifecycle.pipeline import rules_for_dbt

        return rules_for_dbt(SETTINGS)

    @task
    def prepare_warehouse() -> None:
        from lifecycle.warehouse import migrate

        migrate(_warehouse_url())

    dbt = DbtTaskGroup(
        group_id="dbt",
        project_config=ProjectConfig(SETTINGS.dbt_project_dir),
        profile_config=ProfileConfig(
            profile_name="lifecycle",
            target_name="warehouse",
            profile_mapping=PostgresUserPasswordProfileMapping(
                conn_id=CONN_ID,
                profile_args={"schema": SETTINGS.dbt_schema, "threads": SETTINGS.dbt_threads},
            ),
        ),
        execution_config=ExecutionConfig(
            dbt_executable_path=str(Path(sys.executable).parent / "dbt"),
            invocation_mode=InvocationMode.DBT_RUNNER,
        ),
        render_config=RenderConfig(load_method=LoadMode.DBT_LS, test_behavior=TestBehavior.BUILD),
        operator_args={
            # The phases come from the rules file validated by this run (DESIGN.md #1).
            "vars": {"as_of_date": "{{ ds }}", "lifecycle_phases": PHASES_FROM_VALIDATE_RULES},
            "install_deps": False,
            # A model's task runs the tests whose other parents are its ancestors (built
            # before it): a relationships test waits for the model that declares it.
            # Unit tests check model logic, not the day's data: they run in CI (`make test`),
            # not in every daily build (dbt's own advice for production).
            "dbt_cmd_flags": [
                "--indirect-selection",
                "buildable",
                "--exclude-resource-type",
                "unit_test",
            ],
        },
    )

    @task
    def plan() -> dict:
        from lifecycle.pipeline import plan as plan_day

        return plan_day(_warehouse_url(), _plan_date(), SETTINGS).as_dict()

    @task(max_active_tis_per_dag=len(CHANNELS))
    def dispatch(channel: str) -> dict:
        from lifecycle.pipeline import send_due

        clock = get_current_context()["params"]["clock"]
        return send_due(
            _warehouse_url(), _plan_date(), clock=clock, channel=channel, settings=SETTINGS
        ).as_dict()

    @task
    def summarize(planned: dict, sent: list[dict]) -> dict:
        from lifecycle.report import day_summary

        return day_summary(_warehouse_url(), _plan_date(), planned, sent)

    @task
    def report() -> str:
        """The report of the 30 days ending on the date: an HTML file under the reports dir."""
        from lifecycle.report import write_day_report

        return write_day_report(_warehouse_url(), _plan_date(), SETTINGS)

    rules_ok = validate_rules()
    ready = prepare_warehouse()
    planned = plan()
    sent = dispatch.expand(channel=CHANNELS)
    rules_ok >> ready >> dbt >> planned >> sent
    summarize(planned, sent) >> report()


lifecycle_daily()
