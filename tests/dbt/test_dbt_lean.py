"""lifecycle.transform.lean (LIFECYCLE_DBT_LEAN): dbt does less of its own work per node in
process, and builds the same tables. Each shortcut is checked against dbt's own behaviour, and
a whole build with them against one without."""

from __future__ import annotations

import time
from datetime import date

import agate
import psycopg
import psycopg2
import pytest
from dbt.adapters.contracts.connection import Connection, Identifier
from dbt_common.clients import jinja as common_jinja
from dbt_common.events.base_types import EventLevel
from dbt_common.events.event_manager import EventManager
from dbt_common.events.functions import get_stdout_config
from dbt_common.events.logger import LineFormat
from dbt_common.events.types import Note, PrintEvent
from dbt_common.exceptions import CompilationError

from lifecycle.data.generator import generate
from lifecycle.settings import Settings
from lifecycle.transform import lean


def test_a_kept_template_renders_each_call_with_its_own_context():
    source = "select {{ x }} from {{ this }} -- lean test"
    first = lean._get_template(source, {"x": 1, "this": "a"}).render({})
    again = lean._get_template(source, {"x": 2, "this": "b"}).render({})
    assert (first, again) == ("select 1 from a -- lean test", "select 2 from b -- lean test")
    assert (False, False, source) in lean._CODE
    # what dbt's own function renders, and a macro's own environment (native) apart
    assert common_jinja.get_template(source, {"x": 2, "this": "b"}).render({}) == again
    native = [f("{{ [1] + [x] }}", {"x": 2}, native=True).render({})
              for f in (lean._get_template, lean._get_template, common_jinja.get_template)]
    assert native[0] == native[1] == native[2]
    assert (True, False, "{{ [1] + [x] }}") in lean._CODE


def test_a_template_that_does_not_parse_fails_as_dbt_says():
    with pytest.raises(CompilationError) as ours:
        lean._get_template("select {{ x ", {})
    with pytest.raises(CompilationError) as dbts:
        common_jinja.get_template("select {{ x ", {})
    assert str(ours.value) == str(dbts.value)


def _manager(level: EventLevel, callbacks=()) -> EventManager:
    manager = EventManager()
    manager.add_logger(get_stdout_config(LineFormat.PlainText, False, level, False))
    manager.callbacks = list(callbacks)
    return manager


def test_only_events_no_logger_or_callback_receives_are_dropped():
    from dbt.tracking import track_behavior_change_warn

    quiet = _manager(EventLevel.ERROR, [track_behavior_change_warn])  # dbt build --quiet
    debug_event = Note(msg="debug")
    assert lean.unheard(quiet, debug_event)
    assert lean.unheard(quiet, Note(msg="info"), EventLevel.INFO)
    # what someone receives goes through dbt's path
    assert not lean.unheard(quiet, Note(msg="warn"), EventLevel.WARN)  # --warn-error
    assert not lean.unheard(quiet, Note(msg="error"), EventLevel.ERROR)
    assert not lean.unheard(quiet, PrintEvent(msg="{{ print() }}"))  # printed at any level
    assert not lean.unheard(quiet, debug_event, force_warn_or_error_handling=True)
    assert not lean.unheard(_manager(EventLevel.DEBUG), debug_event)  # dbt --debug
    assert not lean.unheard(_manager(EventLevel.ERROR, [print]), debug_event)  # a callback


def test_an_event_builds_its_message_when_first_read():
    """During an invocation an event keeps its fields; the first read builds what dbt would
    have built at once: a logger or a callback gets the same message, fields can be set."""
    heard = []
    manager = _manager(EventLevel.ERROR, [heard.append])
    with lean.lean_invocation():
        quiet = Note(msg="nobody reads this")
        assert "pb_msg" not in quiet.__dict__ and lean._PENDING in quiet.__dict__
        manager.fire_event(Note(msg="a callback gets this"), level=EventLevel.WARN)
        later = Note(msg="read after the invocation")
        set_one = Note(msg="before")
        set_one.msg = "after"
    assert [m.data.msg for m in heard] == ["a callback gets this"]
    assert later.msg == "read after the invocation" and later.message() == later.msg
    assert set_one.pb_msg.msg == "after"
    assert Note(msg="outside").__dict__.keys() == {"pb_msg"}  # built at once, as dbt does
    assert quiet.to_dict() == Note(msg="nobody reads this").to_dict()


def test_a_kept_type_tester_types_a_result_as_a_new_one_does():
    from dbt_common.clients import agate_helper

    build = lean.type_tester(agate_helper.build_type_tester)
    assert build(["a", "b"], ()) is build(("b", "a"), ())  # one per kind, built once
    assert build(["a"], ()) is not build(["a"])  # other null strings: another kind
    rows = [[1, "null", "2026-06-01"], [None, "x", ""]]
    for text_columns, nulls in (({"b"}, ()), ((), ("null", ""))):
        ours = agate.Table(rows, ["a", "b", "c"], column_types=build(text_columns, nulls))
        dbts = agate.Table(rows, ["a", "b", "c"],
                           column_types=agate_helper.build_type_tester(text_columns, nulls))
        assert [type(t) for t in ours.column_types] == [type(t) for t in dbts.column_types]
        assert [list(r) for r in ours.rows] == [list(r) for r in dbts.rows]


def _dbt_connection(url: str) -> Connection:
    handle = psycopg2.connect(url)
    conn = Connection(type=Identifier("postgres"), name="model.x", state="open",
                      transaction_open=False, handle=handle, credentials=None)
    return conn


class _Manager:
    """What lean reads of dbt's connection manager: the thread's connection, and how dbt
    opens one (a new psycopg2 session on the database)."""

    def __init__(self, conn: Connection, url: str) -> None:
        self.conn, self.url = conn, url

    def get_if_exists(self) -> Connection:
        return self.conn

    def open(self, conn: Connection) -> Connection:
        conn.handle, conn.state = psycopg2.connect(self.url), "open"
        return conn


def _next_node(manager: _Manager) -> None:
    """A node done, then the thread's next one taking the connection."""
    assert lean.keep_session(manager)
    lean.reset_session(manager, manager.conn)


def _session(handle) -> dict:
    with handle.cursor() as cur:
        cur.execute("select pg_backend_pid(), current_setting('work_mem'), "
                    "(select count(*) from pg_locks where locktype = 'advisory' "
                    " and pid = pg_backend_pid()), to_regclass('pg_temp.batch') is null")
        pid, work_mem, advisory, no_temp = cur.fetchone()
    handle.rollback()
    return {"pid": pid, "work_mem": work_mem, "advisory_locks": advisory, "no_temp": no_temp}


def test_a_kept_session_is_reset_as_a_new_one_would_be(fresh_db: str):
    conn = _dbt_connection(fresh_db)
    manager, handle = _Manager(conn, fresh_db), conn.handle
    new = _session(handle)
    with handle.cursor() as cur:  # what a node may leave behind: in its session...
        cur.execute("create temp table batch as select 1 as x; set work_mem = '77MB'; "
                    "select pg_advisory_lock(42); create table held (x int)")
        handle.commit()
        # ... and in a transaction still open (dbt's, or one psycopg2 began by itself)
        cur.execute("lock table held in access exclusive mode")
    conn.transaction_open = True
    assert lean.keep_session(manager)
    assert conn.transaction_open is False
    # released: its lock went with the rollback, another session takes the table at once
    with psycopg.connect(fresh_db, autocommit=True) as other:
        other.execute("set lock_timeout = '2s'")
        assert other.execute("select count(*) from held").fetchone() == (0,)
    lean.reset_session(manager, conn)  # the thread's next node takes it
    assert conn.handle is handle and not handle.closed
    assert _session(handle) == new  # the same server process, reset
    # a node whose statement failed leaves an aborted transaction: reset too
    with pytest.raises(psycopg2.Error), handle.cursor() as cur:
        cur.execute("select 1 / 0")
    _next_node(manager)
    assert _session(handle) == new
    handle.autocommit = True  # a profile's autocommit: kept as it was
    _next_node(manager)
    assert handle.autocommit is True and _session(handle) == new
    handle.close()
    assert not lean.keep_session(manager)  # dbt closes what did not come back


def test_a_kept_session_dropped_while_it_waited_is_replaced_before_the_next_node(fresh_db):
    """The server ends an idle session (idle_session_timeout, a restart, the network): the
    next node gets a new session, as dbt's own way (a session per node) would give it."""
    conn = _dbt_connection(fresh_db)
    manager, handle = _Manager(conn, fresh_db), conn.handle
    dropped = _session(handle)["pid"]
    assert lean.keep_session(manager)
    with psycopg.connect(fresh_db, autocommit=True) as admin:
        admin.execute("select pg_terminate_backend(%s)", (dropped,))
    lean.reset_session(manager, conn)
    assert handle.closed and conn.state == "closed"
    fresh = conn.handle  # opened now, as dbt opens a connection when a node first uses it
    assert conn.state == "open" and _session(fresh)["pid"] != dropped
    fresh.close()


def _tables(url: str) -> dict[str, str]:
    """Every table and view dbt built, as an md5 of its rows in order (without the id of
    the dbt invocation that wrote a row)."""
    with psycopg.connect(url) as conn:
        names = [r[0] for r in conn.execute(
            "select table_name from information_schema.tables "
            "where table_schema = 'analytics' order by 1")]
        row = "(to_jsonb(t) - 'dbt_invocation_id')::text"
        return {n: conn.execute(
            f"select md5(coalesce(string_agg({row}, '|' order by {row}), '')) "
            f"from analytics.{n} as t").fetchone()[0] for n in names}


def _sessions(url: str) -> int:
    """Sessions opened on the database so far (a closed session's count reaches the
    statistics as its server process exits: read until it stays the same)."""
    seen = None
    with psycopg.connect(url, autocommit=True) as conn:
        for _ in range(50):
            conn.execute("select pg_stat_clear_snapshot()")
            now = conn.execute("select sessions from pg_stat_database "
                               "where datname = current_database()").fetchone()[0]
            if now == seen:
                break
            seen = now
            time.sleep(0.2)
    return seen


@pytest.mark.slow
def test_a_lean_build_writes_the_same_tables_with_a_session_per_thread(
        server_url: str, migrated_template: str, tmp_path):
    """The same club built with and without the shortcuts (two databases, two days): the
    same rows in every model, every node passed; the lean build opened a few sessions, dbt's
    own way one per node, and wrote no compiled SQL to its target (dbt's own way: a file per
    node under compiled/ and run/)."""
    from lifecycle.pipeline import rules_for_dbt
    from lifecycle.transform.day_build import DAY_FLAGS
    from lifecycle.transform.dbt_vars import VAR_NAME
    from lifecycle.transform.inprocess import InProcessDbt

    base = server_url.rsplit("/", 1)[0]
    club = f"lean_club_{migrated_template[-12:]}"
    urls = {None: f"{base}/{club}"}
    with psycopg.connect(f"{base}/postgres", autocommit=True) as admin:
        admin.execute(f'create database "{club}" template "{migrated_template}"')
        generate(300, date(2025, 1, 1), date(2026, 6, 2), 7, url=urls[None])  # one club, copied
        for lean_build in (False, True):
            name = f"lean_{str(lean_build).lower()}_{migrated_template[-12:]}"
            admin.execute(f'create database "{name}" template "{club}"')
            urls[lean_build] = f"{base}/{name}"
    try:
        built, sessions, written = {}, {}, {}
        for lean_build in (False, True):
            url = urls[lean_build]
            settings = Settings(dbt_lean=lean_build)
            target = tmp_path / f"target-{lean_build}"
            runner = InProcessDbt(url, settings, {VAR_NAME: rules_for_dbt(settings)},
                                  target=target)
            for day in (date(2026, 6, 1), date(2026, 6, 2)):
                before = _sessions(url)
                result = runner.invoke("build", day, *DAY_FLAGS)
                assert result.success, result.exception
                sessions[lean_build] = _sessions(url) - before
                nodes = len(result.result.results)
            built[lean_build] = _tables(url)
            written[lean_build] = {d: len([f for f in (target / d).rglob("*.sql")])
                                   for d in ("compiled", "run")}
        assert built[True] == built[False] and len(built[True]) > 30
        assert written[True] == {"compiled": 0, "run": 0}
        assert written[False]["compiled"] > 30 and written[False]["run"] > 30, written
        assert sessions[True] <= 4 < nodes <= sessions[False], (sessions, nodes)
    finally:
        with psycopg.connect(f"{base}/postgres", autocommit=True) as admin:
            for url in urls.values():
                admin.execute(f'drop database if exists "{url.rsplit("/", 1)[1]}" with (force)')
