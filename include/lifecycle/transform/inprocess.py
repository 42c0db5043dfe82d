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
import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lifecycle.settings import Settings
from lifecycle.transform.dbt import DbtError, cheap_behavior_flag_source, dbt_env

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
        with _LOCK, self._environment():
            return runner.invoke(args)

    def invoke(self, command: str, as_of: datetime.date, *extra: str) -> Any:
        """``dbt <command> <extra>`` as of ``as_of``: dbt's ``dbtRunnerResult`` (not raised
        on failure: ``success``, ``result``, ``exception``)."""
        return self._invoke(self.runner, command, as_of, *extra)

    def run(self, as_of: datetime.date, models: tuple[str, ...]) -> None:
        """``dbt run --select <models>`` as of ``as_of``; DbtError if it fails."""
        result = self.invoke("run", as_of, "--select", *models)
        if not result.success:
            raise DbtError(f"dbt run as of {as_of} failed: {result.exception or result.result}")


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
