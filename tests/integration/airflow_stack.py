"""A real Airflow 3 deployment for tests: scheduler, dag-processor, api-server (the execution
API the task processes report to) and, for CeleryExecutor, Celery workers on a real broker.

Metadata lives in a PostgreSQL database of its own on the test server; the DAGs are the
project's. Nothing is mocked: runs are created by the scheduler (catch-up) or by
``airflow dags trigger``, tasks run in their own processes, exactly as in production.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg

from lifecycle.airflow_env import airflow_env
from lifecycle.settings import Settings
from lifecycle.transform.dbt import ensure_manifest

AIRFLOW = str(Path(sys.executable).parent / "airflow")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def broker_reachable(host: str = "127.0.0.1", port: int = 6379) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


class AirflowStack:
    def __init__(self, home: Path, server_url: str, warehouse_url: str, *,
                 executor: str = "LocalExecutor", workers: int = 0,
                 broker_url: str | None = None, env: dict[str, str] | None = None,
                 worker_concurrency: int = 1):
        self.home = home
        self.admin = server_url.rsplit("/", 1)[0] + "/postgres"
        self.meta_db = "af_" + uuid.uuid4().hex[:10]
        self.meta_url = server_url.rsplit("/", 1)[0] + "/" + self.meta_db
        self.workers = workers
        self.worker_concurrency = worker_concurrency
        self.procs: list[subprocess.Popen] = []
        port = free_port()
        sqlalchemy = self.meta_url.replace("postgresql://", "postgresql+psycopg://", 1)
        self.env = {
            **os.environ,
            **airflow_env(warehouse_url, Settings()),
            "LIFECYCLE_WAREHOUSE_URL": warehouse_url,
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": sqlalchemy,
            # psycopg 3 serves Airflow's async engine too (asyncpg is not installed)
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": sqlalchemy,
            "AIRFLOW__CORE__EXECUTOR": executor,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API_AUTH__JWT_SECRET": "test-secret-" + uuid.uuid4().hex,
            "AIRFLOW__CORE__PARALLELISM": "8",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "5",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        }
        self.port = port
        if broker_url:
            self.env["AIRFLOW__CELERY__BROKER_URL"] = broker_url
            self.env["AIRFLOW__CELERY__RESULT_BACKEND"] = "db+" + self.meta_url
            self.env["AIRFLOW__CELERY__WORKER_CONCURRENCY"] = str(worker_concurrency)
        self.env.update(env or {})

    # ----------------------------------------------------------------- lifecycle

    def _airflow(self, *args: str, timeout: float = 300) -> str:
        out = subprocess.run([AIRFLOW, *args], env=self.env, capture_output=True, text=True,
                             timeout=timeout)
        if out.returncode != 0:
            raise RuntimeError(f"airflow {' '.join(args)} failed:\n{out.stderr[-3000:]}")
        return out.stdout

    def _start(self, name: str, *args: str) -> None:
        log = open(self.home / f"{name}.log", "w")  # noqa: SIM115 - closed with the process
        self.procs.append(subprocess.Popen([AIRFLOW, *args], env=self.env, stdout=log,
                                           stderr=subprocess.STDOUT, start_new_session=True))

    def __enter__(self) -> AirflowStack:
        self.home.mkdir(parents=True, exist_ok=True)
        with psycopg.connect(self.admin, autocommit=True) as conn:
            conn.execute(f'create database "{self.meta_db}"')
        self._airflow("db", "migrate")
        # as a deploy does (the image build): the DAG renders its dbt tasks from the manifest
        ensure_manifest(Settings())
        for pool in ("lifecycle_twilio", "lifecycle_sendgrid"):
            self._airflow("pools", "set", pool, "8", f"{pool} (tests)")
        self._start("api-server", "api-server", "--port", str(self.port))
        self._start("dag-processor", "dag-processor")
        self._start("scheduler", "scheduler")
        for i in range(self.workers):
            self._start(f"worker{i}", "celery", "worker", "--concurrency",
                        str(self.worker_concurrency), "-H", f"worker{i}@%h",
                        "--without-gossip", "--without-mingle", "--skip-serve-logs")
        return self

    def __exit__(self, *exc: object) -> None:
        # Every process group is stopped whatever happens to the others (a scheduler was seen
        # still scheduling half an hour after its test ended): SIGTERM, 30 s in all, SIGKILL.
        for p in self.procs:
            _signal_group(p, 15)
        deadline = time.monotonic() + 30
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for p in self.procs:
            if p.poll() is None:
                _signal_group(p, 9)
                p.kill()
                p.wait(10)
        with psycopg.connect(self.admin, autocommit=True) as conn:
            conn.execute(f'drop database if exists "{self.meta_db}" with (force)')

    def logs(self, tail: int = 4000) -> str:
        parts = []
        for f in sorted(self.home.glob("*.log")):
            parts.append(f"--- {f.name}\n{f.read_text(errors='replace')[-tail:]}")
        return "\n".join(parts)

    # ----------------------------------------------------------------- DAGs and runs

    def meta(self, query: str, params: tuple = ()) -> list[tuple]:
        with psycopg.connect(self.meta_url) as conn:
            return conn.execute(query, params).fetchall()

    def wait_parsed(self, *dag_ids: str, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                found = {r[0] for r in self.meta("select dag_id from dag where dag_id = any(%s)",
                                                 (list(dag_ids),))}
            except psycopg.Error:
                found = set()
            if found == set(dag_ids):
                return
            time.sleep(2)
        raise TimeoutError(f"DAGs {dag_ids} not parsed in {timeout} s\n{self.logs()}")

    def unpause(self, dag_id: str) -> None:
        self._airflow("dags", "unpause", dag_id)

    def trigger(self, dag_id: str, run_id: str, conf: str = "{}") -> None:
        self._airflow("dags", "trigger", dag_id, "--run-id", run_id, "--conf", conf)

    def runs(self, dag_id: str) -> list[tuple]:
        """(run_id, logical_date, state) of every run, oldest first."""
        return self.meta("select run_id, logical_date, state from dag_run where dag_id = %s "
                         "order by logical_date nulls last, run_id", (dag_id,))

    def wait_runs(self, dag_id: str, n: int, timeout: float = 900) -> list[tuple]:
        """Wait until ``n`` runs of ``dag_id`` exist and all have finished."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            runs = self.runs(dag_id)
            if len(runs) >= n and all(r[2] in ("success", "failed") for r in runs):
                return runs
            time.sleep(3)
        raise TimeoutError(f"{dag_id}: runs {self.runs(dag_id)} after {timeout} s\n"
                           f"{self.logs()}")

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str]:
        return {f"{t}[{i}]" if i >= 0 else t: s for t, i, s in self.meta(
            "select task_id, map_index, state from task_instance where dag_id = %s and "
            "run_id = %s", (dag_id, run_id))}

    def task_hosts(self, dag_id: str, run_id: str, task_id: str) -> list[str]:
        return [r[0] for r in self.meta(
            "select hostname from task_instance where dag_id = %s and run_id = %s and "
            "task_id = %s order by map_index", (dag_id, run_id, task_id))]


def _signal_group(p: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(p.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
