"""A process's CPU priority carried to the PostgreSQL backends that do its work.

``nice`` lowers a process's priority, but its queries run in the server's backend processes,
at the server's priority: a niced batch job on the machine that runs the server still takes
the CPU from everything else while its SQL runs. ``backends_niced_like_me`` renices the
backends connected to one database (every connection, dbt's included) to the calling process's
niceness while it lasts, when the server runs on this machine and the OS allows it (root, or
the server's own user); otherwise it does nothing and says why in the log.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict

log = logging.getLogger(__name__)

_LOCAL_HOSTS = {"", "localhost", "127.0.0.1", "::1"}


def _is_local(host: str | None) -> bool:
    """Whether a connection's ``host`` (none: the local socket) is this machine."""
    return all(h in _LOCAL_HOSTS or h.startswith("/") for h in str(host or "").split(","))


def _is_postgres(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip().startswith("postgres")
    except OSError:
        return False


@contextmanager
def backends_niced_like_me(url: str, poll_s: float = 0.2,
                           niceness: int | None = None) -> Iterator[int | None]:
    """While inside, every backend connected to ``url``'s database runs at this process's
    niceness (or ``niceness``; looked for every ``poll_s`` seconds). Yields that niceness, or
    None when nothing is done: not niced, or the server is not on this machine."""
    niceness = os.getpriority(os.PRIO_PROCESS, 0) if niceness is None else niceness
    params = conninfo_to_dict(url)
    if niceness <= 0 or not _is_local(params.get("host")):
        yield None
        return
    dbname = params.get("dbname")
    stop = threading.Event()

    def run() -> None:
        try:
            renice()
        except psycopg.Error as exc:  # the database went away: nothing left to renice
            log.info("backends of %s no longer reniced: %s", dbname, exc)

    def renice() -> None:
        done: set[int] = set()
        with psycopg.connect(url, autocommit=True) as conn:
            # This connection's own backend is alive while it is open: if it is not a postgres
            # process of this machine, neither are the others (a tunnel, a container's server).
            if not _is_postgres(conn.info.backend_pid):
                log.info("the server's backends are not this machine's processes: left as is")
                return
            while True:
                pids = {r[0] for r in conn.execute(
                    "select pid from pg_stat_activity where datname = %s", (dbname,))}
                for pid in pids - done:
                    try:
                        os.setpriority(os.PRIO_PROCESS, pid, niceness)
                    except ProcessLookupError:
                        pass  # the connection closed meanwhile
                    except PermissionError:
                        log.info("not permitted to renice the server's backends: left as is")
                        return
                done = pids
                if stop.wait(poll_s):
                    return

    thread = threading.Thread(target=run, name="nice-backends", daemon=True)
    thread.start()
    try:
        yield niceness
    finally:
        stop.set()
        thread.join()
