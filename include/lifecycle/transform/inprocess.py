"""dbt in this process on a manifest parsed once: a build without dbt's start-up and parse.

A ``dbt build`` in a subprocess starts dbt (its imports), parses the whole project again (the
as-of date is a var and changes every day, which defeats dbt's partial parsing) and writes
manifest.json and run_results.json: at 2,000 customers 11.6 s of CPU a day against 4.7 s for
the same build in-process on a manifest parsed before (bench/RESULTS.md). Here the project is
parsed once per process, for the warehouse and the vars that can change what a parse makes,
and each build compiles its nodes with the day's vars: the same SQL, materialisations and
hooks as a subprocess build.

dbt's in-process API keeps global state and is not thread-safe: one invocation at a time (a
lock), each with dbt's environment set for its duration. Used by the daily DAG's day build
(``lifecycle.transform.day_build``: the demo's ``dag.test()`` runs every day in one process)
and by ``lifecycle simulate``.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import statistics
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from lifecycle.settings import Settings
from lifecycle.transform.dbt import DbtError, cheap_behavior_flag_source, dbt_env
from lifecycle.transform.lean import lean_invocation

_LOCK = threading.RLock()


class InProcessDbt:
    """The project parsed once in this process for ``url`` and ``parse_vars``; ``invoke``
    runs a dbt command on that manifest with ``parse_vars`` and the day's as-of date."""

    def __init__(self, url: str, settings: Settings, parse_vars: dict[str, Any],
                 target: Path | None = None) -> None:
        from dbt.cli.main import dbtRunner

        cheap_behavior_flag_source()
        # kept for the runner's life; removed with it (or at exit)
        self._tmp = None if target else tempfile.TemporaryDirectory(prefix="lifecycle-dbt-")
        target = Path(target or self._tmp.name)
        self.env = {**dbt_env(url, settings), "DBT_TARGET_PATH": str(target),
                    "DBT_LOG_PATH": str(target / "logs")}
        self.project_dir = settings.dbt_project_dir
        self.vars = dict(parse_vars)
        # each node's seconds in the latest invocation that ran it: the weights of the order
        # in which the next build's queue hands nodes to dbt's threads (critical_path_first)
        # (kept in the state dir, so that each day's task process starts from the last build)
        self.seconds_file = settings.state_dir / "dbt-build" / "node_seconds.json"
        self.seconds: dict[str, float] = _read_seconds(self.seconds_file)
        self.order = settings.dbt_build_order
        self.lean = settings.dbt_lean
        self.threads = settings.dbt_threads
        result = self._invoke(dbtRunner(), "parse", None, "--no-partial-parse")
        if not result.success:
            raise DbtError(f"dbt parse failed: {result.exception}")
        self.runner = dbtRunner(manifest=result.result)

    @contextmanager
    def _environment(self) -> Iterator[None]:
        saved = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)
        try:
            yield
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def _invoke(self, runner: Any, command: str, as_of: datetime.date | None, *extra: str):
        dbt_vars = dict(self.vars)
        if as_of is not None:
            dbt_vars["as_of_date"] = as_of.isoformat()
        args = [
            command,
            "--project-dir", str(self.project_dir),
            "--profiles-dir", str(self.project_dir),
            "--vars", json.dumps(dbt_vars),
            "--quiet",
            # no dbt.log: the log of a temporary target nobody reads, written line by line
            # with a rollover check per line (a 10k-customer build: 6.0-6.6 s with it,
            # 3.8-4.0 s without; bench/RESULTS.md)
            "--log-level-file", "none",
            # the results come back in memory: writing manifest.json and run_results.json
            # cost ~0.3 s (simulation) to ~1 s (the whole project) an invocation
            "--no-write-json",
            *extra,
        ]
        order = (critical_path_first(self.seconds, self.threads)
                 if self.order == "critical_path" else nullcontext())
        with _LOCK, self._environment(), order, lean_invocation() if self.lean else nullcontext():
            result = runner.invoke(args)
        ran = getattr(result.result, "results", None) or ()
        for r in ran:
            self.seconds[r.node.unique_id] = float(r.execution_time or 0.0)
        if ran:
            _write_seconds(self.seconds_file, self.seconds)
        return result

    def invoke(self, command: str, as_of: datetime.date, *extra: str) -> Any:
        """``dbt <command> <extra>`` as of ``as_of``: dbt's ``dbtRunnerResult`` (not raised
        on failure: ``success``, ``result``, ``exception``)."""
        return self._invoke(self.runner, command, as_of, *extra)

    def run(self, as_of: datetime.date, models: tuple[str, ...]) -> None:
        """``dbt run --select <models>`` as of ``as_of``; DbtError if it fails."""
        result = self.invoke("run", as_of, "--select", *models)
        if not result.success:
            raise DbtError(f"dbt run as of {as_of} failed: {result.exception or result.result}")


def _read_seconds(path: Path) -> dict[str, float]:
    """The node seconds a previous build stored; none when missing or unreadable (the order
    then counts nodes: only the order depends on them)."""
    try:
        return {str(k): float(v) for k, v in json.loads(path.read_text()).items()}
    except (OSError, ValueError, AttributeError, TypeError):
        return {}


def _write_seconds(path: Path, seconds: dict[str, float]) -> None:
    """Stored for the next process (the next day's task), whole or not at all; a state dir
    that cannot be written only costs the next process its weights."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(json.dumps(seconds, sort_keys=True))
        os.replace(partial, path)
    except OSError as exc:
        logging.getLogger(__name__).warning("dbt node seconds not stored: %s", exc)


def critical_path_scores(graph: Any, seconds: dict[str, float]) -> dict[str, float]:
    """Each node's place in dbt's queue (lower goes first): minus the longest chain of work
    from it to the end of the build, a node weighing its ``seconds`` (the median of them for a
    node without; 1 each when there are none, a process's first build: the longest chain of
    nodes)."""
    import networkx as nx

    default = statistics.median(seconds.values()) if seconds else 1.0
    tail: dict[str, float] = {}
    for node in reversed(list(nx.topological_sort(graph))):
        after = max((tail[child] for child in graph.successors(node)), default=0.0)
        tail[node] = seconds.get(node, default) + after
    return {node: -chain for node, chain in tail.items()}


@contextmanager
def critical_path_first(seconds: dict[str, float], threads: int) -> Iterator[None]:
    """dbt's build queue hands each free thread the ready node with the longest chain of work
    after it (critical_path_scores), while dbt runs in this process.

    dbt orders ready nodes by their depth in the graph (dbt.graph.queue.GraphQueue.
    _get_scores) and has no setting for it; and its main thread takes every node from that
    queue as soon as it is ready and queues it for the thread pool, first in first out, so the
    order held only among nodes ready at the same moment. At a million customers the heavy
    models beside customer_facts' inputs (contact_health, message_delivery, customer_service_
    purchases) took the threads while those inputs waited, and customer_facts, which most of
    the rest waits for, then ran alone (bench/RESULTS.md). For the invocation (callers hold
    _LOCK: one at a time) this scores nodes as above and has the queue hand out a node only
    when fewer than ``threads`` are in progress; both are put back afterwards. Only the order
    changes: a node still starts once everything it depends on is done."""
    from dbt.graph.queue import GraphQueue

    own_scores, own_get = GraphQueue.__dict__["_get_scores"], GraphQueue.__dict__["get"]
    threads = max(1, threads)  # a setting of 0 must not wait forever

    def get(queue: Any, block: bool = True, timeout: float | None = None) -> Any:
        # one consumer (dbt's main thread): in_progress only shrinks until it takes the node
        with queue.lock:
            while len(queue.in_progress) >= threads:
                queue.some_task_done.wait()
        return own_get(queue, block, timeout)

    GraphQueue._get_scores = lambda queue, graph: critical_path_scores(graph, seconds)
    GraphQueue.get = get
    try:
        yield
    finally:
        GraphQueue._get_scores, GraphQueue.get = own_scores, own_get


_CACHED: dict[str, InProcessDbt] = {}


def cached_runner(url: str, settings: Settings, parse_vars: dict[str, Any]) -> InProcessDbt:
    """The runner of this process for the warehouse, the project as it is now and the vars
    other than the as-of date (any of which can change what a parse makes, e.g. a test
    enabled by a var); parsed now when one of them changed. One is kept: a new one replaces
    it."""
    from lifecycle.transform.dbt import project_fingerprint

    key = json.dumps([dbt_env(url, settings), project_fingerprint(settings), parse_vars],
                     sort_keys=True)
    with _LOCK:
        runner = _CACHED.get(key)
        if runner is None:
            _CACHED.clear()
            runner = _CACHED[key] = InProcessDbt(url, settings, parse_vars)
        return runner
