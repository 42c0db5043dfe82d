"""The day's dbt graph in one ``dbt build``, each model's verdict read back from its results.

The daily DAG's ``LIFECYCLE_DBT_MODE=one_build``: one task runs ``dbt build``
for the whole project (dbt's threads work side by side, the project is parsed once), then one
small task per model or seed says how that node and the tests that gate it did, so Airflow
still shows each model's result and planning waits for all of them. The per-model mode ran
one dbt invocation per node instead: 27 dbt start-ups and project parses a day.

A model's task passes when its node and its tests passed in the day's build. Otherwise it
builds its node itself (``dbt build --select <node>``, tests included), as the per-model mode
did, and passes or fails as that build does: a failing model fails its task (with dbt's
message) and planning does not run; a retry of that task builds it again; a model dbt skipped
because an upstream model failed is built once that upstream model's task passes on a retry.
(The task's try number cannot tell a retry: clearing a run raises it too.) Everything the
build writes is for the logical date D (docs/architecture.md #3), so building a node twice
gives the same tables.

``LIFECYCLE_DBT_MODE=one_task`` (the default) keeps the build and drops the task per model: the
build's task fails, naming every model that failed or was skipped (``failures``), and a retry
runs the whole build again; each model's result is an Asset event of that task.

No Airflow here: the DAG's tasks call these functions (docs/architecture.md #7).
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lifecycle.settings import Settings, get_settings
from lifecycle.transform.dbt import DbtError
from lifecycle.transform.dbt_vars import VAR_NAME as PHASES_VAR

# As the daily build has always run: unit tests check model logic with phases they pin
# themselves and run in CI, not on every day's data.
DAY_FLAGS = ("--exclude-resource-type", "unit_test")
# A node built on its own takes the tests whose other parents are built before it.
NODE_FLAGS = ("--indirect-selection", "buildable", *DAY_FLAGS)
BUILT = frozenset({"success", "pass", "warn"})  # dbt's statuses of a node or test that is fine
RESOURCES = ("model", "seed", "snapshot")


@dataclass(frozen=True)
class Node:
    """A model (or seed, snapshot) of the project: one task of the DAG's dbt group."""

    name: str
    unique_id: str
    resource_type: str
    parents: tuple[str, ...]  # names of the nodes of the graph it reads
    tests: tuple[str, ...]  # unique ids of the tests that gate it


def graph(manifest: Path) -> dict[str, Node]:
    """The nodes of the project's manifest, by name, in an order where parents come first.

    A test with several parent nodes gates the one that is built last (the parent every other
    parent is an ancestor of); with no such parent, each parent that no other parent needs.
    """
    nodes = json.loads(Path(manifest).read_text())["nodes"]
    ids = {k: n for k, n in nodes.items() if n["resource_type"] in RESOURCES}
    parents = {k: [p for p in n["depends_on"].get("nodes", []) if p in ids] for k, n in ids.items()}
    ancestors: dict[str, set[str]] = {}

    def up(uid: str) -> set[str]:
        if uid not in ancestors:
            ancestors[uid] = set()
            ancestors[uid] = {a for p in parents[uid] for a in (p, *up(p))}
        return ancestors[uid]

    gated: dict[str, list[str]] = {k: [] for k in ids}
    for tid, test in nodes.items():
        if test["resource_type"] != "test":
            continue
        own = [p for p in test["depends_on"].get("nodes", []) if p in ids]
        last = [p for p in own if not any(p in up(q) for q in own if q != p)]
        for p in last:
            gated[p].append(tid)
    order = sorted(ids, key=lambda k: (len(up(k)), ids[k]["name"]))
    return {
        ids[k]["name"]: Node(
            name=ids[k]["name"],
            unique_id=k,
            resource_type=ids[k]["resource_type"],
            parents=tuple(sorted(ids[p]["name"] for p in parents[k])),
            tests=tuple(sorted(gated[k])),
        )
        for k in order
    }


def _dbt_vars(as_of: datetime.date, phases: str) -> dict[str, str]:
    return {"as_of_date": as_of.isoformat(), PHASES_VAR: phases}


def _results(result: Any, url: str) -> dict[str, dict[str, str]]:
    """Each node's and test's status from an in-process invocation's result; DbtError when
    dbt ran nothing (the project does not compile, the warehouse is unreachable)."""
    ran = getattr(result.result, "results", None)
    if ran is None:
        raise DbtError(f"dbt build ran nothing: {result.exception or result.result}")
    # An XCom that every model task of the day pulls: each node's status, and a test only
    # when it did not pass (verdict() counts a test missing here as passed); what went wrong
    # is kept, a passing node's message ("SELECT 1234") is not. 34 entries instead of 182.
    return {
        r.node.unique_id: {"status": str(r.status),
                           "message": "" if str(r.status) in BUILT else _message(r, url)[:500]}
        for r in ran
        if r.node.resource_type != "test" or str(r.status) not in BUILT
    }


def _message(r: Any, url: str) -> str:
    """dbt's message for a node or test that did not pass; for a model's `checks` test that
    failed, which of its checks failed and on how many rows (dbt says only "Got 2 results"):
    its query is run again, which a failure alone costs."""
    message = str(r.message or "")
    meta = getattr(r.node, "test_metadata", None)
    sql = getattr(r.node, "compiled_code", None)
    if str(r.status) != "fail" or meta is None or meta.name != "checks" or not sql:
        return message
    import psycopg

    try:
        with psycopg.connect(url, autocommit=True) as conn:
            rows = conn.execute(f"select * from ({sql}) as failed limit 20").fetchall()
    except psycopg.Error as exc:
        return f"{message} (its failing checks could not be read: {exc})"
    return message + ": " + "; ".join(f"{check}: {n} rows" for check, n in rows)


def _runner(url: str, phases: str, settings: Settings, extra_vars: dict[str, str] | None):
    from lifecycle.transform.inprocess import cached_runner

    return cached_runner(url, settings, {PHASES_VAR: phases, **(extra_vars or {})})


def build_day(
    url: str,
    as_of: datetime.date,
    phases: str,
    *,
    settings: Settings | None = None,
    extra_vars: dict[str, str] | None = None,
) -> dict[str, dict[str, str]]:
    """One ``dbt build`` of the project as of ``as_of``; each node's and test's result.

    ``phases`` is the ``lifecycle_phases`` var (validate_rules' JSON). A model or test that
    fails does not raise: its result is returned (``{"status": "error", "message": ...}``;
    its downstream nodes are ``skipped``) and its task reports it. DbtError when dbt ran
    nothing (the project does not compile, the warehouse is unreachable). dbt runs in this
    process on a manifest parsed once per process (``lifecycle.transform.inprocess``): the
    demo's days, all in one process, parse the project once.
    """
    runner = _runner(url, phases, settings or get_settings(), extra_vars)
    return _results(runner.invoke("build", as_of, *DAY_FLAGS), url)


def verdict(results: dict[str, dict[str, str]], node: Node) -> str | None:
    """None when ``node`` and its tests passed in the day's build, else what went wrong."""
    mine = results.get(node.unique_id)
    if mine is None:
        return f"{node.name} was not in the day's dbt build"
    if mine["status"] not in BUILT:
        return f"{node.name}: {mine['status']} {mine['message']}".rstrip()
    failed = [
        f"{tid.split('.')[2]}: {results[tid]['status']} {results[tid]['message']}".rstrip()
        for tid in node.tests
        if tid in results and results[tid]["status"] not in BUILT
    ]
    return f"{node.name}: a test failed: " + "; ".join(failed) if failed else None


def failures(results: dict[str, dict[str, str]], nodes: dict[str, Node]) -> list[str]:
    """What went wrong with each of ``nodes`` in the day's build (verdict), in build order;
    empty when every node and its tests passed."""
    return [why for node in nodes.values() if (why := verdict(results, node)) is not None]


def build_node(
    url: str,
    as_of: datetime.date,
    phases: str,
    node: Node,
    *,
    settings: Settings | None = None,
    extra_vars: dict[str, str] | None = None,
) -> None:
    """``dbt build --select <node>`` with the tests that gate it; DbtError if any fails."""
    runner = _runner(url, phases, settings or get_settings(), extra_vars)
    results = _results(runner.invoke("build", as_of, "--select", node.name, *NODE_FLAGS), url)
    failed = [f"{uid.split('.')[2]}: {r['status']} {r['message']}".rstrip()
              for uid, r in results.items() if r["status"] not in BUILT]
    if failed:
        raise DbtError(f"dbt build --select {node.name} as of {as_of} failed: "
                       + "; ".join(failed))
