"""`lifecycle airflow`: the local Airflow UI starts on the demo's metadata home, a person logs in
with the printed login in a real (headless) Chromium and sees the project's three DAGs; Ctrl-C
stops every Airflow process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
from browser import Browser, chromium_available

pytestmark = pytest.mark.slow
LIFECYCLE = str(Path(sys.executable).parent / "lifecycle")
DAGS = ("lifecycle_daily", "lifecycle_dispatch", "lifecycle_reconcile")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _read_until(proc: subprocess.Popen, marker: str, timeout: float) -> list[str]:
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    os.set_blocking(proc.stdout.fileno(), False)
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line:
            lines.append(line.rstrip("\n"))
            if line.startswith(marker):
                return lines
        elif proc.poll() is not None:
            break
        else:
            time.sleep(0.2)
    raise AssertionError(f"no {marker!r} line; output: {lines}")


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return [int(x) for x in out.stdout.split()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_the_local_airflow_ui_logs_in_and_shows_the_dags(fresh_db, tmp_path):
    if not chromium_available():
        pytest.skip("chromium is not installed (make test installs it with apt-get when root)")
    home = tmp_path / "state"
    env = {**os.environ, "LIFECYCLE_HOME": str(home), "LIFECYCLE_WAREHOUSE_URL": fresh_db}
    port = _free_port()
    proc = subprocess.Popen([LIFECYCLE, "airflow", "--port", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = _read_until(proc, "logs:", timeout=400)
        assert f"Airflow UI: http://127.0.0.1:{port}" in lines
        login = next(x for x in lines if x.startswith("login: "))
        user, password = login.removeprefix("login: ").split("  ")[0].split(" / ")
        stored = json.loads((home / "airflow-passwords.json").read_text())
        assert user == "admin" and stored == {"admin": password}
        children = _children(proc.pid)
        assert len(children) == 4, children  # api-server, scheduler, dag-processor, triggerer

        with Browser() as b:
            b.goto(f"http://127.0.0.1:{port}/")
            b.wait_for("!!document.querySelector('input[type=password]')", 120)
            b.type_into("input[name=username]", user)
            b.type_into("input[name=password]", password)
            b.js("document.querySelector('button[type=submit]').click()")
            b.wait_for("!location.pathname.startsWith('/auth')", 60)
            b.goto(f"http://127.0.0.1:{port}/dags")
            shown = " && ".join(f"document.body.innerText.includes('{d}')" for d in DAGS)
            b.wait_for(shown, 300)  # the dag-processor parses them after start
            assert "3 Dags" in b.text()
        # the DAGs wait to be unpaused: nothing is scheduled on the wall clock behind the UI
        with psycopg.connect(fresh_db) as conn:
            assert conn.execute("select count(*) from ops.runs").fetchone()[0] == 0
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        try:
            proc.wait(90)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    rest = proc.stdout.read() if proc.stdout else ""
    assert proc.returncode == 0, rest
    assert "stopped" in rest
    assert not [c for c in children if _alive(c)]
    assert not (home / "airflow" / "ui.pid").exists()
