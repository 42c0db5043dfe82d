"""DagBag policy: every DAG file imports, and every DAG follows the house rules."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag()


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}
    assert {"lifecycle_daily", "lifecycle_dispatch", "lifecycle_reconcile"} <= set(dagbag.dag_ids)


def test_every_task_says_what_failed(dagbag):
    for dag_id in dagbag.dag_ids:
        for t in dagbag.dags[dag_id].tasks:
            callbacks = t.on_failure_callback
            callbacks = callbacks if isinstance(callbacks, list) else [callbacks]
            assert any(getattr(c, "func", None).__name__ == "on_failure" for c in callbacks if c), (
                dag_id, t.task_id)


def test_every_dag_has_owner_tags_retries(dagbag):
    for dag_id in dagbag.dag_ids:
        dag = dagbag.dags[dag_id]
        assert dag.tags, dag_id
        for t in dag.tasks:
            assert t.owner == "lifecycle", (dag_id, t.task_id)
            assert t.retries >= 1, (dag_id, t.task_id)


def test_daily_dag_runs_days_in_order_and_gates_planning_on_dbt(dagbag):
    dag = dagbag.dags["lifecycle_daily"]
    assert dag.max_active_runs == 1
    assert dag.catchup is True  # missed days are caught up, in order
    assert dag.params["clock"] == "wall"
    assert dag.params["phases"] == [] and dag.params["dry_run"] is False
    plan = dag.get_task("plan")
    upstream = {t.task_id for t in plan.get_flat_relatives(upstream=True)}
    dbt_tasks = {t.task_id for t in dag.tasks if t.task_id.startswith("dbt.")}
    assert dbt_tasks == {"dbt.build"}  # LIFECYCLE_DBT_MODE=one_task, the default
    assert dbt_tasks <= upstream
    assert {"validate_rules", "prepare_warehouse"} <= upstream
    for channel, pool in (("sms", "lifecycle_twilio"), ("email", "lifecycle_sendgrid")):
        dispatch = dag.get_task(f"dispatch_{channel}")
        assert dispatch.pool == pool
        assert "plan" in {t.task_id for t in dispatch.get_flat_relatives(upstream=True)}
    # planning hands over to lifecycle_dispatch through the outbox Asset
    assert [o.name for o in dag.get_task("plan").outlets] == ["lifecycle_outbox"]


def test_one_build_mode_has_a_task_per_model_after_the_build(monkeypatch):
    """LIFECYCLE_DBT_MODE=one_build: one dbt build, then a task per model that waits for the
    build and for its parents' tasks (lifecycle.transform.day_build); planning waits for all."""
    from airflow.dag_processing.dagbag import DagBag

    from lifecycle.settings import Settings

    monkeypatch.setenv("LIFECYCLE_DBT_MODE", "one_build")
    bag = DagBag(dag_folder=str(Settings().project_dir / "dags" / "lifecycle_daily.py"))
    assert bag.import_errors == {}
    dag = bag.dags["lifecycle_daily"]
    upstream = {t.task_id for t in dag.get_task("plan").get_flat_relatives(upstream=True)}
    dbt_tasks = {t.task_id for t in dag.tasks if t.task_id.startswith("dbt.")}
    assert "dbt.customer_facts_model_build" in dbt_tasks
    assert dbt_tasks <= upstream
    build = dag.get_task("dbt.build")
    assert "validate_rules" in {t.task_id for t in build.get_flat_relatives(upstream=True)}
    assert "dbt.metrics_retention_monthly_model_build" in dbt_tasks
    for model in dbt_tasks - {"dbt.build"}:
        assert "dbt.build" in dag.get_task(model).upstream_task_ids, model
    facts = dag.get_task("dbt.customer_facts_model_build").upstream_task_ids
    assert {"dbt.int_visits_customer_model_build", "dbt.stg_club__customers_model_build"} <= facts
    history = dag.get_task("dbt.customer_lifecycle_history_model_build").upstream_task_ids
    assert history == {"dbt.build", "dbt.customer_lifecycle_stage_model_build"}


def test_per_model_mode_builds_each_model_in_its_own_cosmos_task(monkeypatch):
    """LIFECYCLE_DBT_MODE=per_model: one Cosmos dbt task per model, as of the run's logical
    date, with the phases validate_rules returned (docs/architecture.md #1: the rules file,
    never a hand-kept copy)."""
    from airflow.dag_processing.dagbag import DagBag

    from lifecycle.settings import Settings
    from lifecycle.transform.dbt import before_dbt_task

    monkeypatch.setenv("LIFECYCLE_DBT_MODE", "per_model")
    bag = DagBag(dag_folder=str(Settings().project_dir / "dags" / "lifecycle_daily.py"))
    assert bag.import_errors == {}
    dag = bag.dags["lifecycle_daily"]
    dbt_tasks = {t.task_id for t in dag.tasks if t.task_id.startswith("dbt.")}
    assert "dbt.build" not in dbt_tasks
    phases_from_xcom = "{{ ti.xcom_pull(task_ids='validate_rules') }}"
    for model in (
        "customer_facts",
        "customer_phase_eligibility",
        "customer_lifecycle_history",
        "metrics_phase_eligibility_monthly",
    ):
        build = dag.get_task(f"dbt.{model}_model_build")
        assert build.vars == {"as_of_date": "{{ ds }}", "lifecycle_phases": phases_from_xcom,
                              "default_country_code": "380"}
        assert "validate_rules" in {t.task_id for t in build.get_flat_relatives(upstream=True)}, (
            model
        )
    assert "dbt.metrics_retention_monthly_model_build" in dbt_tasks
    # dbt runs in the task's process: every dbt task first makes its behaviour flags cheap
    assert {dag.get_task(t)._pre_execute_hook for t in dbt_tasks} == {before_dbt_task}


def test_one_task_mode_builds_in_one_task_with_an_asset_per_model(monkeypatch):
    """LIFECYCLE_DBT_MODE=one_task (the default): the day's build is the only dbt task,
    planning waits for it, and every model and seed of the project is one of its Assets."""
    from airflow.dag_processing.dagbag import DagBag

    from lifecycle.settings import Settings
    from lifecycle.transform.day_build import graph
    from lifecycle.transform.dbt import ensure_manifest

    monkeypatch.setenv("LIFECYCLE_DBT_MODE", "one_task")
    bag = DagBag(dag_folder=str(Settings().project_dir / "dags" / "lifecycle_daily.py"))
    assert bag.import_errors == {}
    dag = bag.dags["lifecycle_daily"]
    assert {t.task_id for t in dag.tasks if t.task_id.startswith("dbt.")} == {"dbt.build"}
    assert "dbt.build" in dag.get_task("plan").upstream_task_ids
    build = dag.get_task("dbt.build")
    assert "validate_rules" in {t.task_id for t in build.get_flat_relatives(upstream=True)}
    nodes = graph(ensure_manifest(Settings()))
    assert sorted(o.name for o in build.outlets) == sorted(f"dbt.analytics.{n}" for n in nodes)
    assert "customer_facts" in nodes and "service_catalog" in nodes


def test_dispatch_dag_drains_each_channel_in_mapped_shards_within_its_pool(dagbag):
    dag = dagbag.dags["lifecycle_dispatch"]
    assert dag.max_active_runs == 1 and dag.catchup is False
    # every 10 minutes, and at once when a plan updates the outbox Asset
    assert [key.name for key, _ in dag.timetable.asset_condition.iter_assets()] == [
        "lifecycle_outbox"
    ]
    for channel, pool in (("sms", "lifecycle_twilio"), ("email", "lifecycle_sendgrid")):
        drain = dag.get_task(f"drain_{channel}")
        assert drain.pool == pool
        assert drain.partial_kwargs["op_kwargs"]["channel"] == channel
        assert f"{channel}_shards" in {t.task_id for t in drain.upstream_list}


def test_reconcile_dag_runs_hourly_without_catchup(dagbag):
    dag = dagbag.dags["lifecycle_reconcile"]
    assert dag.catchup is False and [t.task_id for t in dag.tasks] == ["reconcile"]


def test_daily_catch_up_is_bounded_by_a_first_task_not_a_moving_start_date(dagbag):
    """A first deploy catches up at most LIFECYCLE_DAILY_CATCHUP_DAYS days: every task waits
    for within_catchup, which skips the rest of an old day's run; the start date stays the
    fixed setting (a start date that moves with the clock is an Airflow anti-pattern)."""
    from lifecycle.settings import Settings

    dag = dagbag.dags["lifecycle_daily"]
    gate = dag.get_task("within_catchup")
    assert gate.upstream_list == []
    others = {t.task_id for t in dag.tasks} - {gate.task_id}
    assert {t.task_id for t in gate.get_flat_relatives(upstream=False)} == others
    assert gate.ignore_downstream_trigger_rules is True  # summarize/report are skipped too
    start = Settings().daily_start_date
    assert dag.start_date.date() == start and dag.catchup is True
