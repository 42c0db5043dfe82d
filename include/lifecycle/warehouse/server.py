"""The warehouse: an external PostgreSQL by URL, or an embedded one under ``.lifecycle/``.

The embedded server uses the PostgreSQL 16 binaries shipped in the ``pgserver`` wheel, but not
its ``PostgresServer`` class: that one listens on a Unix socket only and stops the server when
the Python process exits. We need a TCP listener on 127.0.0.1 (Cosmos builds Asset URIs from
the host) and a server that outlives a CLI call, so we drive ``initdb``/``pg_ctl`` ourselves.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import psycopg

from lifecycle.settings import Settings, get_settings

DATABASE = "lifecycle"
USER = "postgres"
# Trust auth on loopback ignores it; Cosmos' Postgres profile mapping requires a password.
PASSWORD = "lifecycle"
SYSTEM_USER = "pgserver"  # PostgreSQL refuses to run as root


class WarehouseError(RuntimeError):
    pass


def _bin(name: str) -> Path:
    # Located without importing pgserver: its __init__ sets up a runtime dir we do not use.
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise WarehouseError("the pgserver package is not installed: run `make .venv`")
    return Path(spec.submodule_search_locations[0]) / "pginstall" / "bin" / name


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class EmbeddedWarehouse:
    """A PostgreSQL server in ``state_dir/pgdata`` listening on 127.0.0.1 only."""

    state_dir: Path
    preferred_port: int = 0

    @property
    def pgdata(self) -> Path:
        return self.state_dir / "pgdata"

    @property
    def state_file(self) -> Path:
        return self.state_dir / "warehouse.json"

    @property
    def logfile(self) -> Path:
        return self.state_dir / "postgres.log"

    def _state(self) -> dict:
        if self.state_file.exists():
            return json.loads(self.state_file.read_text())
        return {}

    @property
    def port(self) -> int | None:
        return self._state().get("port")

    def url(self) -> str:
        port = self.port
        if port is None:
            raise WarehouseError(
                f"the embedded warehouse in {self.state_dir} was never started: "
                "run `lifecycle warehouse up`"
            )
        return f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{port}/{DATABASE}"

    def _run_as(self) -> dict:
        if os.geteuid() != 0:
            return {}
        _ensure_system_user()
        for path in (self.state_dir, _bin("postgres")):
            _open_parents(path)
        os.chown(self.state_dir, *_uid_gid(SYSTEM_USER))
        return {"user": SYSTEM_USER}

    def _pg(self, args: list[str], **kw) -> subprocess.CompletedProcess:
        return subprocess.run(
            args, check=False, capture_output=True, text=True, **self._run_as(), **kw
        )

    def is_running(self) -> bool:
        if not (self.pgdata / "PG_VERSION").exists():
            return False
        res = self._pg([str(_bin("pg_ctl")), "-D", str(self.pgdata), "status"])
        return res.returncode == 0

    def up(self) -> str:
        """Initialise (first time) and start the server; idempotent. Returns its URL."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if not (self.pgdata / "PG_VERSION").exists():
            self.pgdata.mkdir(parents=True, exist_ok=True)
            run_as = self._run_as()
            if run_as:
                os.chown(self.pgdata, *_uid_gid(SYSTEM_USER))
            res = self._pg(
                [
                    str(_bin("initdb")),
                    "-D",
                    str(self.pgdata),
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--locale=C",
                    "-U",
                    USER,
                ]
            )
            if res.returncode != 0:
                raise WarehouseError(f"initdb failed: {res.stderr.strip()}")
        if not self.is_running():
            port = self.port or self.preferred_port or _free_port()
            if _port_open(port):
                raise WarehouseError(
                    f"port {port} on 127.0.0.1 is taken by another server; set "
                    "LIFECYCLE_EMBEDDED_PORT to a free port or remove "
                    f"{self.state_file} to pick a new one"
                )
            if os.geteuid() == 0:
                self.logfile.touch()
                os.chown(self.logfile, *_uid_gid(SYSTEM_USER))
            opts = (
                f"-h 127.0.0.1 -p {port} -k '' -c fsync=off -c synchronous_commit=off "
                "-c full_page_writes=off -c max_connections=200 -c shared_buffers=256MB "
                "-c work_mem=64MB -c maintenance_work_mem=256MB -c max_wal_size=4GB"
            )
            res = self._pg(
                [
                    str(_bin("pg_ctl")),
                    "-D",
                    str(self.pgdata),
                    "-l",
                    str(self.logfile),
                    "-o",
                    opts,
                    "-w",
                    "-t",
                    "60",
                    "start",
                ],
                stdin=subprocess.DEVNULL,
            )
            if res.returncode != 0:
                tail = self.logfile.read_text()[-2000:] if self.logfile.exists() else ""
                raise WarehouseError(f"pg_ctl start failed: {res.stderr.strip()}\n{tail}")
            self.state_file.write_text(json.dumps({"port": port}))
        self._ensure_database()
        return self.url()

    def _ensure_database(self) -> None:
        admin = self.url().rsplit("/", 1)[0] + "/postgres"
        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(admin, autocommit=True) as conn:
                    exists = conn.execute(
                        "select 1 from pg_database where datname = %s", (DATABASE,)
                    ).fetchone()
                    if not exists:
                        conn.execute(f'create database "{DATABASE}"')
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise

    def down(self) -> bool:
        """Stop the server if it runs. Returns whether it was running."""
        if not self.is_running():
            return False
        res = self._pg([str(_bin("pg_ctl")), "-D", str(self.pgdata), "-m", "fast", "-w", "stop"])
        if res.returncode != 0:
            raise WarehouseError(f"pg_ctl stop failed: {res.stderr.strip()}")
        return True


def _ensure_system_user() -> None:
    import pwd

    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "-s", "/bin/false", SYSTEM_USER], check=True, capture_output=True
        )


def _open_parents(path: Path) -> None:
    """Let the server's system user traverse every parent directory of ``path``."""
    for parent in path.parents:
        mode = parent.stat().st_mode
        if mode & 0o055 != 0o055:
            parent.chmod(mode | 0o055)


def _uid_gid(user: str) -> tuple[int, int]:
    import pwd

    entry = pwd.getpwnam(user)
    return entry.pw_uid, entry.pw_gid


def embedded(settings: Settings | None = None) -> EmbeddedWarehouse:
    settings = settings or get_settings()
    return EmbeddedWarehouse(settings.state_dir, settings.embedded_port)


def resolve_url(settings: Settings | None = None, *, start: bool = True) -> str:
    """The warehouse URL: ``LIFECYCLE_WAREHOUSE_URL`` if set, else the embedded server's."""
    settings = settings or get_settings()
    if settings.warehouse_url:
        return settings.warehouse_url
    wh = embedded(settings)
    return wh.up() if start else wh.url()


def masked(url: str) -> str:
    """The URL with its password hidden, for logs."""
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@", 1)
    return url


@contextmanager
def connect(url: str, **kw) -> Iterator[psycopg.Connection]:
    with psycopg.connect(url, **kw) as conn:
        yield conn
