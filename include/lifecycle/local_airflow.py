"""``lifecycle airflow`` (``make airflow``): the Airflow UI on this machine, on the metadata the
demo's runs are in.

api-server, scheduler, dag-processor and triggerer run as child processes (``airflow`` from the
same venv; no Airflow import here, docs/architecture.md #7) with ``local_airflow_env``: the
demo's home and SQLite metadata database, the warehouse as the ``lifecycle_warehouse``
connection. The login is the simple auth manager's user ``admin``, its password kept in
``<state dir>/airflow-passwords.json`` (generated once). Ctrl-C (or SIGTERM) stops every process.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from lifecycle.airflow_env import LOCAL_USER, local_airflow_env, local_home, local_passwords_file
from lifecycle.settings import Settings, get_settings

SERVICES = ("api-server", "scheduler", "dag-processor", "triggerer")
POOL_SLOTS = 8
STARTUP_TIMEOUT_S = 300
STOP_TIMEOUT_S = 30


class LocalAirflowError(RuntimeError):
    pass


class _Stop(Exception):
    """SIGTERM, handled like Ctrl-C."""


def _airflow_bin() -> str:
    return str(Path(sys.executable).parent / "airflow")


def _port_taken(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def login_password(settings: Settings | None = None) -> str:
    """The local admin's password: read from the passwords file, generated there the first
    time (the simple auth manager's own format, a JSON object user -> password)."""
    path = local_passwords_file(settings)
    passwords: dict[str, str] = {}
    if path.exists():
        try:
            passwords = json.loads(path.read_text() or "{}")
        except ValueError as exc:
            raise LocalAirflowError(
                f"{path}: not the JSON object of user -> password Airflow writes ({exc}); "
                "delete the file and a new password is generated"
            ) from exc
    if LOCAL_USER not in passwords:
        alphabet = "abcdefghkmnpqrstuvwxyzABCDEFGHKMNPQRSTUVWXYZ23456789"
        passwords[LOCAL_USER] = "".join(secrets.choice(alphabet) for _ in range(16))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(passwords) + "\n")
        path.chmod(0o600)
    return passwords[LOCAL_USER]


def ui_env(url: str, port: int, settings: Settings | None = None) -> dict[str, str]:
    settings = settings or get_settings()
    return {
        **os.environ,
        **local_airflow_env(url, settings),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        # One secret for every process of this start (tokens the api-server signs for tasks).
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
    }


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}/api/v2/monitor/health", timeout=2
        ) as resp:
            return resp.status == 200
    except OSError:
        return False


def _stop(procs: dict[str, subprocess.Popen]) -> None:
    """SIGTERM every process group, SIGKILL what is left after STOP_TIMEOUT_S."""
    for p in procs.values():
        _signal_group(p, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for p in procs.values():
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for p in procs.values():
        if p.poll() is None:
            _signal_group(p, signal.SIGKILL)
            p.wait(10)


def _signal_group(p: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(p.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _tail(path: Path, n: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def serve(url: str, *, port: int = 8080, settings: Settings | None = None,
          say: Callable[[str], None] = print) -> int:
    """Run the local Airflow until Ctrl-C/SIGTERM (0) or until a service dies (1)."""
    from lifecycle.transform.dbt import ensure_manifest

    settings = settings or get_settings()
    if _port_taken(port):
        raise LocalAirflowError(f"port {port} on 127.0.0.1 is taken: pass --port with a free one")
    home = local_home(settings)
    logs = home / "ui-logs"
    logs.mkdir(parents=True, exist_ok=True)
    pid_file = home / "ui.pid"
    env = ui_env(url, port, settings)
    password = login_password(settings)
    ensure_manifest(settings)  # the DAG renders its dbt tasks from it (no `dbt ls` per parse)
    say(f"preparing the metadata database in {home} ...")
    for args in (["db", "migrate"], ["pools", "import", str(_pools_file(home, settings))]):
        done = subprocess.run([_airflow_bin(), *args], env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise LocalAirflowError(f"airflow {' '.join(args)} failed:\n{done.stderr[-3000:]}")

    def on_term(signum, frame):  # noqa: ANN001
        raise _Stop

    previous = signal.signal(signal.SIGTERM, on_term)
    # Ctrl-C even when started in the background of a shell (which ignores SIGINT there).
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    procs: dict[str, subprocess.Popen] = {}
    pid_file.write_text(str(os.getpid()))
    try:
        for name in SERVICES:
            args = [name, "--port", str(port)] if name == "api-server" else [name]
            with open(logs / f"{name}.log", "w") as log:
                # A session of its own: Ctrl-C reaches this process only, which stops them.
                procs[name] = subprocess.Popen([_airflow_bin(), *args], env=env, stdout=log,
                                               stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not _healthy(port):
            dead = [n for n, p in procs.items() if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                what = f"{dead[0]} exited" if dead else f"no answer in {STARTUP_TIMEOUT_S} s"
                name = dead[0] if dead else "api-server"
                say(f"Airflow did not start ({what}); {logs / (name + '.log')}:\n"
                    f"{_tail(logs / (name + '.log'))}")
                return 1
            time.sleep(1)
        say(f"Airflow UI: http://127.0.0.1:{port}")
        say(f"login: {LOCAL_USER} / {password}  (kept in {local_passwords_file(settings)})")
        say("DAGs start paused: lifecycle_daily unpaused catches up from "
            f"{settings.daily_start_date} on the wall clock (LIFECYCLE_DAILY_START_DATE)")
        say(f"logs: {logs}; Ctrl-C stops Airflow")
        while True:
            dead = [n for n, p in procs.items() if p.poll() is not None]
            if dead:
                say(f"{dead[0]} exited; {logs / (dead[0] + '.log')}:\n"
                    f"{_tail(logs / (dead[0] + '.log'))}")
                return 1
            time.sleep(1)
    except (KeyboardInterrupt, _Stop):
        say("stopping Airflow ...")
        return 0
    finally:
        _stop(procs)
        pid_file.unlink(missing_ok=True)
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
        if procs:
            say("stopped")


def _pools_file(home: Path, settings: Settings) -> Path:
    """The pools the DAGs' dispatch tasks run in (their names are settings)."""
    path = home / "pools.json"
    path.write_text(json.dumps({
        name: {"slots": POOL_SLOTS, "description": f"{name} (local Airflow)",
               "include_deferred": False}
        for name in (settings.twilio_pool, settings.sendgrid_pool)
    }))
    return path
