"""lifecycle_daily: one logical day = validate rules -> dbt build -> plan -> dispatch.

Wiring only: every task body is one call into the ``lifecycle`` package. The warehouse is the
Airflow connection ``lifecycle_warehouse`` (a PostgreSQL URI); the Python tasks get it through
``Connection.get``, and so does dbt (in process; through Cosmos' profile mapping with
LIFECYCLE_DBT_MODE=per_model). ``validate_rules`` returns the phases as the dbt var
``lifecycle_phases``; the dbt tasks take it from that XCom.

dbt's tests gate everything downstream: a failing test fails the build's task dbt.build
(LIFECYCLE_DBT_MODE=one_task, the default; with one_build and per_model, its model's task),
and planning waits for it.
Planning updates the ``lifecycle_outbox`` Asset, which starts ``lifecycle_dispatch``.
Catch-up is on: missed days run in order of their logical date
(``max_active_runs=1``) and build dbt (facts, lifecycle history); with the wall clock, a day
whose send window has passed (older than ``LIFECYCLE_CATCHUP_MAX_DAYS``, default 0 = before
today) is not planned: the phase windows catch its customers today, and the outbox keys forbid
a second send either way. Catch-up is bounded: a wall-clock run for a day more than
``LIFECYCLE_DAILY_CATCHUP_DAYS`` (default 3) before today stops at its first task, so a first
deploy or a long outage builds at most that many old days. The start date stays fixed (a start
date that moves with the clock would make scheduling unstable).
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from functools import partial

import pendulum
from airflow.sdk import (
    Asset,
    BaseOperator,
    Connection,
    Param,
    TaskGroup,
    dag,
    get_current_context,
    task,
)
from airflow.sdk.exceptions import AirflowSkipException
from cosmos import (
    DbtTaskGroup,
    ExecutionConfig,
    ProfileConfig,
    ProjectConfig,
    RenderConfig,
)
from cosmos.constants import InvocationMode, LoadMode, TestBehavior
from cosmos.profiles import PostgresUserPasswordProfileMapping

from lifecycle.operations import on_failure
from lifecycle.settings import get_settings
from lifecycle.transform.dbt import before_dbt_task, dbt_executable, fresh_manifest

SETTINGS = get_settings()  # environment only: no database, network or files touched here
# Rendered when a dbt task runs: validate_rules' XCom, the JSON that
# lifecycle.transform.dbt_vars generates.
PHASES_FROM_VALIDATE_RULES = "{{ ti.xcom_pull(task_ids='validate_rules') }}"
OUTBOX = Asset("lifecycle_outbox")
# The task group is rendered from the manifest `lifecycle dbt-manifest` stores (and
# prepare_warehouse refreshes) while it matches the project's files: reading it takes ~30 ms.
# Without it, Cosmos runs `dbt ls` at every parse of this file, in the DAG processor and in
# every task process (~14 s of CPU each: with 28 dbt tasks a day, most of a day's run).
MANIFEST = fresh_manifest(SETTINGS)
# Tasks that return a dict say multiple_outputs=False: the `-> dict` annotation would otherwise
# push every key as an XCom of its own besides the whole value (dbt.build: one per node, ~60
# execution-API calls a day that nothing reads).


def _one_build_nodes() -> dict:
    """The dbt nodes of LIFECYCLE_DBT_MODE=one_build or one_task, from the stored manifest
    (parsed here once when missing or stale); empty for per_model, or when no manifest can be
    had (the DAG then renders the per-model Cosmos tasks with `dbt ls`, as before)."""
    from lifecycle.transform.day_build import graph
    from lifecycle.transform.dbt import DbtError, ensure_manifest

    if SETTINGS.dbt_mode not in ("one_build", "one_task"):
        return {}
    try:
        return graph(MANIFEST or ensure_manifest(SETTINGS))
    except (OSError, DbtError) as exc:
        logging.getLogger(__name__).warning("no dbt manifest (dbt runs per model): %s", exc)
        return {}


NODES = _one_build_nodes()

log = logging.getLogger(__name__)
CONN_ID = os.environ.get("LIFECYCLE_WAREHOUSE_CONN_ID", "lifecycle_warehouse")


def warehouse_url() -> str:
    return Connection.get(CONN_ID).get_uri()


def _plan_date():
    return get_current_context()["logical_date"].date()


class DbtNodeResult(BaseOperator):
    """One dbt node's result in the day's build (task dbt.build): passes when the node and
    the tests that gate it passed there; otherwise builds the node and its tests itself, so a
    retry (or a model whose upstream passed on its retry) runs dbt again, and a failure shows
    dbt's message here. (Not try_number: clearing a run raises it.)

    An operator with nothing to template: a @task would render its arguments and send them to
    the API server for every one of the day's ~33 node tasks (~10 ms each).
    """

    template_fields = ()
    ui_color = "#e8f1f8"

    def __init__(self, *, node: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.node = node

    def execute(self, context) -> None:
        from lifecycle.transform.day_build import build_node, verdict

        ti = context["ti"]
        why = verdict(ti.xcom_pull(task_ids="dbt.build") or {}, NODES[self.node])
        if why is None:
            return  # built and tested by the day's build
        log.warning("dbt build as of %s: %s; building it on its own", _plan_date(), why)
        phases = ti.xcom_pull(task_ids="validate_rules")
        build_node(warehouse_url(), _plan_date(), phases, NODES[self.node], settings=SETTINGS)


def _build_the_day() -> dict:
    """dbt.build of one_build and one_task: the project built as of the run's date with the
    phases validate_rules returned; each node's and failed test's result."""
    from lifecycle.transform.day_build import build_day

    phases = get_current_context()["ti"].xcom_pull(task_ids="validate_rules")
    return build_day(warehouse_url(), _plan_date(), phases, settings=SETTINGS)


def one_build_group() -> TaskGroup:
    """The day's dbt graph as one `dbt build` (task dbt.build), then one task per model or
    seed, named as the per-model mode names them, that passes when its node and the tests
    that gate it passed in that build, and otherwise builds its node with its tests itself
    and fails as dbt does (planning waits for every one; lifecycle.transform.day_build)."""
    with TaskGroup("dbt") as group:

        @task(task_id="build", multiple_outputs=False)
        def build() -> dict:
            return _build_the_day()

        def node_task(name: str) -> DbtNodeResult:
            return DbtNodeResult(task_id=f"{name}_{NODES[name].resource_type}_build", node=name)

        built = build()
        tasks = {name: node_task(name) for name in NODES}
        for name, t in tasks.items():
            built >> t
            for parent in NODES[name].parents:
                tasks[parent] >> t
    return group


def one_task_group() -> TaskGroup:
    """LIFECYCLE_DBT_MODE=one_task: the day's `dbt build` in one task (dbt.build), no task per
    model. It fails when a model or a test that gates one failed, naming each (and the models
    dbt skipped after them), so planning does not run; a retry builds the whole project again
    (as of the same date: the same tables). When it passes, each model and seed gets an event
    of its own Asset (`dbt.<schema>.<model>`, with the date and dbt's status): the Assets view
    shows when each was last built. ~33 task instances fewer a day than one_build: under the
    LocalExecutor or Celery each is a task process of its own."""
    assets = {name: Asset(f"dbt.{SETTINGS.dbt_schema}.{name}") for name in NODES}
    with TaskGroup("dbt") as group:

        @task(task_id="build", multiple_outputs=False, outlets=list(assets.values()))
        def build() -> dict:
            from lifecycle.transform.day_build import failures
            from lifecycle.transform.dbt import DbtError

            results = _build_the_day()
            failed = failures(results, NODES)
            if failed:
                raise DbtError(f"dbt build as of {_plan_date()}: {len(failed)} of "
                               f"{len(NODES)} models did not build: " + "; ".join(failed))
            outlet_events = get_current_context()["outlet_events"]
            for name, asset in assets.items():
                outlet_events[asset].extra = {
                    "as_of": _plan_date().isoformat(),
                    "status": results[NODES[name].unique_id]["status"]}
            return results

        build()
    return group


@dag(
    dag_id="lifecycle_daily",
    description="Plan and send the day's lifecycle messages",
    schedule=SETTINGS.daily_schedule,
    start_date=pendulum.datetime(
        SETTINGS.daily_start_date.year, SETTINGS.daily_start_date.month,
        SETTINGS.daily_start_date.day, tz="UTC"
    ),
    catchup=True,
    # Days run in order: caps and 'already sent' read the days before.
    max_active_runs=1,
    default_args={
        "owner": "lifecycle",
        "retries": SETTINGS.task_retries,
        "retry_delay": timedelta(minutes=5),
        "execution_timeout": timedelta(hours=2),
        "on_failure_callback": partial(on_failure, url_getter=warehouse_url),
    },
    params={
        "clock": Param(
            "wall",
            enum=["wall", "logical"],
            description="wall: send what is due now; logical: replay the day (demo, backfill)",
        ),
        "phases": Param(
            [],
            type="array",
            items={"type": "string",
                   "enum": ["activation", "stimulation", "cross_sell", "retention", "return"]},
            description="Plan only these phases (empty: all). Rerun one phase of a day.",
        ),
        "dry_run": Param(
            False, type="boolean",
            description="Build and say what would be planned; write no outbox row, send nothing",
        ),
    },
    tags=["lifecycle", "daily"],
)
def lifecycle_daily():
    @task.short_circuit
    def within_catchup() -> bool:
        """A wall-clock run for a day older than the catch-up bound stops here: every other
        task is skipped (nothing built, planned or sent; recorded in ops.runs)."""
        from lifecycle.operations import skip_old_run

        if get_current_context()["params"]["clock"] != "wall":
            return True  # a replay (demo, backfill) runs whatever day it is given
        return skip_old_run(warehouse_url(), _plan_date(), pendulum.now("UTC").date(),
                            SETTINGS) is None

    @task
    def validate_rules() -> str:
        """The rules file's phases as the dbt var lifecycle_phases (small JSON, fine for XCom)."""
        from lifecycle.pipeline import rules_for_dbt

        return rules_for_dbt(SETTINGS)

    @task
    def prepare_warehouse() -> None:
        from lifecycle.transform.dbt import DbtError, ensure_manifest
        from lifecycle.warehouse.migrations import ensure_schema, migrate

        migrate(warehouse_url())
        # before the dbt tasks start side by side: each would try to create it
        ensure_schema(warehouse_url(), SETTINGS.dbt_schema)
        # After a change to the dbt project the next parses render from a fresh manifest
        # again (this run's tasks were rendered by `dbt ls`: the same tasks). Only a speed-up:
        # a read-only state dir or a failed parse leaves the DAG on `dbt ls`, the run goes on.
        try:
            ensure_manifest(SETTINGS)
        except (OSError, DbtError) as exc:
            log.warning("dbt manifest not refreshed (the DAG renders with dbt ls): %s", exc)

    if NODES and SETTINGS.dbt_mode == "one_task":
        dbt = one_task_group()
    elif NODES:
        dbt = one_build_group()
    else:
        dbt = DbtTaskGroup(
            group_id="dbt",
            project_config=ProjectConfig(SETTINGS.dbt_project_dir, manifest_path=MANIFEST,
                                         install_dbt_deps=False),
            profile_config=ProfileConfig(
                profile_name="lifecycle",
                target_name="warehouse",
                profile_mapping=PostgresUserPasswordProfileMapping(
                    conn_id=CONN_ID,
                    profile_args={"schema": SETTINGS.dbt_schema, "threads": SETTINGS.dbt_threads},
                ),
            ),
            execution_config=ExecutionConfig(
                dbt_executable_path=str(dbt_executable()),
                invocation_mode=InvocationMode.DBT_RUNNER,
            ),
            render_config=RenderConfig(
                load_method=LoadMode.DBT_MANIFEST if MANIFEST else LoadMode.DBT_LS,
                test_behavior=TestBehavior.BUILD,
            ),
            operator_args={
                # dbt runs in the task's process: its behaviour flags must not walk the stack
                # (lifecycle.transform.dbt.cheap_behavior_flag_source: a third of a demo day
                # by day 10)
                "pre_execute": before_dbt_task,
                # The phases come from the rules file validated by this run
                # (docs/architecture.md #1).
                "vars": {"as_of_date": "{{ ds }}", "lifecycle_phases": PHASES_FROM_VALIDATE_RULES,
                         # national phones get the club's calling code (LIFECYCLE_DEFAULT_REGION)
                         "default_country_code": SETTINGS.default_country_code},
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

    @task(outlets=[OUTBOX], multiple_outputs=False)
    def plan() -> dict:
        from lifecycle.operations import plan_or_preview
        from lifecycle.pipeline import skip_stale_day

        params = get_current_context()["params"]
        if params["clock"] == "wall":
            # A missed day caught up late: built (facts, history), not planned.
            why = skip_stale_day(warehouse_url(), _plan_date(), pendulum.now("UTC").date(),
                               SETTINGS)
            if why:
                raise AirflowSkipException(why)
        return plan_or_preview(warehouse_url(), _plan_date(), phases=params["phases"],
                               dry_run=params["dry_run"], settings=SETTINGS)

    @task.short_circuit
    def sending() -> bool:
        """A dry run stops here: nothing is dispatched."""
        return not get_current_context()["params"]["dry_run"]

    @task(multiple_outputs=False)
    def dispatch(channel: str) -> dict:
        """Send the day's due rows of one channel (logical clock: all of them, replaying D)."""
        from airflow.sdk.exceptions import AirflowNotFoundException

        from lifecycle.operations import with_provider_connections
        from lifecycle.pipeline import send_due

        clock = get_current_context()["params"]["clock"]
        # Credentials: the connections lifecycle_twilio / lifecycle_sendgrid, else environment.
        settings = with_provider_connections(SETTINGS, Connection.get, AirflowNotFoundException)
        return send_due(
            warehouse_url(), _plan_date(), clock=clock, channel=channel, settings=settings
        ).as_dict()

    @task(multiple_outputs=False)
    def summarize(planned: dict, sent: list[dict]) -> dict:
        from lifecycle.insight.report import day_summary

        return day_summary(warehouse_url(), _plan_date(), planned, sent)

    @task
    def report() -> str:
        """The report of the 30 days ending on the date: an HTML file under the reports dir."""
        from lifecycle.insight.report import write_day_report

        return write_day_report(warehouse_url(), _plan_date(), SETTINGS)

    bound = within_catchup()
    rules_ok = validate_rules()
    ready = prepare_warehouse()
    planned = plan()
    send = sending()
    sent = [
        dispatch.override(task_id="dispatch_sms", pool=SETTINGS.twilio_pool)(channel="sms"),
        dispatch.override(task_id="dispatch_email", pool=SETTINGS.sendgrid_pool)(
            channel="email"
        ),
    ]
    bound >> rules_ok >> ready >> dbt >> planned >> send >> sent
    summarize(planned, sent) >> report()


lifecycle_daily()
