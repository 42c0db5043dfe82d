"""A niced process's SQL runs niced too: its database's backends are reniced to its level."""

from __future__ import annotations

import os
import time

import psycopg

from lifecycle.warehouse.priority import backends_niced_like_me


def _niceness_of(conn: psycopg.Connection) -> int:
    return os.getpriority(os.PRIO_PROCESS, conn.info.backend_pid)


def _wait_for(conn: psycopg.Connection, niceness: int, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while _niceness_of(conn) != niceness and time.monotonic() < deadline:
        time.sleep(0.05)
    return _niceness_of(conn)


def test_backends_of_the_database_take_the_niceness_and_others_do_not(fresh_db, server_url):
    with psycopg.connect(fresh_db) as before, psycopg.connect(server_url) as elsewhere:
        assert _niceness_of(before) == 0
        with backends_niced_like_me(fresh_db, poll_s=0.05, niceness=7) as got:
            assert got == 7
            # a connection open before, and one opened inside (as dbt opens its own)
            with psycopg.connect(fresh_db) as inside:
                assert _wait_for(inside, 7) == 7
            assert _wait_for(before, 7) == 7
            # dbt opens and closes a connection per node: backends that come and go between
            # one look and the next do not stop the renicing of those opened after them
            for _ in range(20):
                psycopg.connect(fresh_db).close()
            with psycopg.connect(fresh_db) as late:
                assert _wait_for(late, 7) == 7
        # another database's backends are not this job's
        assert _niceness_of(elsewhere) == 0


def test_nothing_is_done_unniced_or_for_a_server_elsewhere(fresh_db):
    with backends_niced_like_me(fresh_db, niceness=0) as got:
        assert got is None
    # a remote server's backend pids are not this machine's processes: never reniced
    with backends_niced_like_me("postgresql://u@10.1.2.3:5432/db", niceness=7) as got:
        assert got is None
