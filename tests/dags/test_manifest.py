"""The daily DAG renders its dbt tasks from a stored manifest while it matches the project.

Without one (or with a stale one) Cosmos runs `dbt ls` at every parse of the DAG file, in the
DAG processor and in every task process; the tasks must be the same either way.
"""

from __future__ import annotations

import json
import shutil
import sys

import pytest

from lifecycle.settings import Settings
from lifecycle.transform.dbt import ensure_manifest, fresh_manifest, manifest_path

pytestmark = pytest.mark.slow


def _parse_daily(monkeypatch, home):
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("LIFECYCLE_HOME", str(home))
    path = Settings().project_dir / "dags" / "lifecycle_daily.py"
    bag = DagBag(dag_folder=str(path))
    assert bag.import_errors == {}
    (module,) = [m for m in list(sys.modules.values())
                 if getattr(m, "__file__", None) == str(path)]
    dag = bag.dags["lifecycle_daily"]
    return module.MANIFEST, {t.task_id: sorted(t.upstream_task_ids) for t in dag.tasks}


def test_manifest_and_dbt_ls_render_the_same_tasks(tmp_path, monkeypatch):
    monkeypatch.setenv("LIFECYCLE_DBT_MODE", "per_model")  # Cosmos renders the tasks
    used, from_ls = _parse_daily(monkeypatch, tmp_path / "no-manifest")
    assert used is None  # nothing stored: dbt ls

    # LIFECYCLE_DBT_MODE=one_build needs the manifest: the DAG file parses and stores it once
    home = tmp_path / "with-manifest"
    monkeypatch.setenv("LIFECYCLE_DBT_MODE", "one_build")
    used, one_build = _parse_daily(monkeypatch, home)
    written = fresh_manifest(Settings(home=home))
    assert used is None and written == manifest_path(Settings(home=home))

    monkeypatch.setenv("LIFECYCLE_DBT_MODE", "per_model")
    used, from_manifest = _parse_daily(monkeypatch, home)
    assert used == written

    assert from_manifest == from_ls
    dbt_tasks = {t for t in from_ls if t.startswith("dbt.")}
    assert {"dbt.customer_facts_model_build", "dbt.service_catalog_seed_build"} <= dbt_tasks
    assert len(dbt_tasks) >= 20

    # one_build: the same task per model and seed, with the same dependencies between them,
    # plus the build they all wait for
    assert set(one_build) == set(from_ls) | {"dbt.build"}
    assert one_build["dbt.build"] == ["prepare_warehouse"]
    for task_id, upstream in from_ls.items():
        if task_id.startswith("dbt."):  # inside the group the roots wait for the build
            upstream = [t for t in upstream if t.startswith("dbt.")] + ["dbt.build"]
        assert sorted(upstream) == one_build[task_id], task_id


def test_a_changed_project_makes_the_manifest_stale(tmp_path):
    project = tmp_path / "project"
    shutil.copytree(Settings().dbt_project_dir, project / "dbt_project",
                    ignore=shutil.ignore_patterns("target", "logs"))
    settings = Settings(project_dir=project, home=tmp_path / "state")
    assert fresh_manifest(settings) is None

    path = ensure_manifest(settings)
    assert path == manifest_path(settings) and fresh_manifest(settings) == path
    before = path.stat().st_mtime_ns
    assert ensure_manifest(settings) == path and path.stat().st_mtime_ns == before  # kept

    model = project / "dbt_project" / "models" / "marts" / "extra_model.sql"
    model.write_text("select 1 as one\n")
    assert fresh_manifest(settings) is None  # a new model: the stored one no longer describes it
    path = ensure_manifest(settings)
    assert fresh_manifest(settings) == path
    assert "model.lifecycle.extra_model" in json.loads(path.read_text())["nodes"]

    model.write_text("select 2 as two\n")  # an edit, same file names
    assert fresh_manifest(settings) is None

