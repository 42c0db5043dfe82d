"""lifecycle.transform.day_build: the graph the one-build mode renders, and each model's verdict
from the day's dbt results (the build itself runs in tests/integration/test_daily_dag.py)."""

from __future__ import annotations

import json

from lifecycle.transform.day_build import Node, graph, verdict


def _node(kind: str, name: str, parents: list[str]) -> dict:
    return {"resource_type": kind, "name": name, "depends_on": {"nodes": parents}}


def _manifest(tmp_path) -> str:
    nodes = {
        "seed.p.catalog": {"resource_type": "seed", "name": "catalog", "depends_on": {}},
        "model.p.stg": _node("model", "stg", ["source.p.raw.customers"]),
        "model.p.facts": _node("model", "facts", ["model.p.stg", "seed.p.catalog"]),
        "model.p.history": _node("model", "history", ["model.p.facts"]),
        "test.p.unique_stg_id": _node("test", "unique_stg_id", ["model.p.stg"]),
        # a relationships test from facts to stg gates facts: stg is built before it
        "test.p.relationships_facts": _node("test", "relationships_facts",
                                            ["model.p.facts", "model.p.stg"]),
        # neither parent needs the other: the test gates both
        "test.p.same_rows": _node("test", "same_rows", ["model.p.stg", "seed.p.catalog"]),
        # catalog is an ancestor of history: the test gates history
        "test.p.history_rows": _node("test", "history_rows", ["model.p.history", "seed.p.catalog"]),
        "unit_test.p.facts.case": _node("unit_test", "case", ["model.p.facts"]),
    }
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({"nodes": nodes}))
    return path


def test_the_graph_has_each_model_and_seed_with_its_parents_and_gating_tests(tmp_path):
    g = graph(_manifest(tmp_path))
    assert list(g) == ["catalog", "stg", "facts", "history"]  # parents first
    assert g["facts"] == Node("facts", "model.p.facts", "model", ("catalog", "stg"),
                              ("test.p.relationships_facts",))
    assert g["stg"].parents == ()
    assert g["stg"].tests == ("test.p.same_rows", "test.p.unique_stg_id")
    assert g["catalog"].resource_type == "seed"
    assert g["catalog"].tests == ("test.p.same_rows",)
    assert g["history"].tests == ("test.p.history_rows",)


def test_a_model_passes_only_when_it_and_its_tests_passed_in_the_day_build(tmp_path):
    g = graph(_manifest(tmp_path))
    ok = {"status": "success", "message": ""}
    results = {
        "model.p.stg": ok,
        "test.p.unique_stg_id": {"status": "pass", "message": ""},
        "model.p.facts": ok,
        "test.p.relationships_facts": {"status": "fail", "message": "Got 3 results"},
        "model.p.history": {"status": "skipped", "message": ""},
    }
    results["test.p.same_rows"] = {"status": "pass", "message": ""}
    assert verdict(results, g["stg"]) is None
    assert verdict(results, g["facts"]) == (
        "facts: a test failed: relationships_facts: fail Got 3 results")
    assert verdict(results, g["history"]) == "history: skipped"
    assert verdict(results, g["catalog"]) == "catalog was not in the day's dbt build"
    results["model.p.stg"] = {"status": "error", "message": "relation does not exist"}
    assert verdict(results, g["stg"]) == "stg: error relation does not exist"
    # a warning is not a failure
    results["test.p.relationships_facts"] = {"status": "warn", "message": "Got 1 result"}
    assert verdict(results, g["facts"]) is None
