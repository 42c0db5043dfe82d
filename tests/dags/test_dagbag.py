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
    assert "lifecycle_daily" in dagbag.dag_ids


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
    assert dag.catchup is False
    assert dag.params["clock"] == "wall"
    plan = dag.get_task("plan")
    upstream = {t.task_id for t in plan.get_flat_relatives(upstream=True)}
    dbt_tasks = {t.task_id for t in dag.tasks if t.task_id.startswith("dbt.")}
    assert "dbt.customer_facts_model_build" in dbt_tasks
    assert dbt_tasks <= upstream
    assert {"validate_rules", "prepare_warehouse"} <= upstream
    dispatch = dag.get_task("dispatch")
    assert "plan" in {t.task_id for t in dispatch.upstream_list}
    # dbt builds as of the run's logical date, with the phases validate_rules returned
    # (DESIGN.md #1: the rules file, never a hand-kept copy)
    phases_from_xcom = "{{ ti.xcom_pull(task_ids='validate_rules') }}"
    for model in (
        "customer_facts",
        "customer_phase_eligibility",
        "customer_lifecycle_history",
        "metrics_phase_eligibility_monthly",
    ):
        build = dag.get_task(f"dbt.{model}_model_build")
        assert build.vars == {"as_of_date": "{{ ds }}", "lifecycle_phases": phases_from_xcom}
        assert "validate_rules" in {t.task_id for t in build.get_flat_relatives(upstream=True)}, (
            model
        )
    assert "dbt.metrics_retention_monthly_model_build" in dbt_tasks
