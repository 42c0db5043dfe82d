"""Less of dbt's own work per node while dbt runs in this process (``LIFECYCLE_DBT_LEAN``).

At 10,000 customers each node's SQL takes milliseconds; what a build costs is dbt's Python
per node, on threads that share one interpreter, and a new PostgreSQL session per node. A
profile of the day's in-process build (py-spy, 74 nodes; bench/RESULTS.md) found three parts
of it that do nothing for this project:

- **Templates compiled again every build.** dbt renders each node's SQL with
  ``Environment.from_string``: lexed, parsed and compiled to Python each time (a tenth of
  the nodes' samples). The compiled code of a source depends only on the source and the kind
  of environment, so it is kept and each render binds it to the render's own environment and
  context (``jinja2.Template.from_code``, what ``from_string`` does after compiling).
- **Events nobody receives.** Every statement fires debug events that dbt turns into
  protobuf messages and log lines (env secrets scrubbed) which the quiet console and the
  absent log file then drop (a sixth). An event below every logger's level, with no callback
  of the caller's, is dropped before that; warnings, errors, print events and anything
  ``--warn-error`` must see still go through dbt's own path.
- **A session per node.** dbt closes its thread's connection after every node and opens a
  new one for the next: a server process started and its catalog caches warmed again, 74
  times a build (~1.2 s of the server's CPU in a 10k build). Here a thread keeps its
  connection from node to node: when a node is done its transaction is rolled back (dbt
  commits what a materialisation writes before), and when the thread takes it for its next
  node ``DISCARD ALL`` resets the session (temp tables, settings, prepared statements,
  session locks) as a new session would be. A connection in any doubt is closed as before;
  one dropped while it waited gets replaced by a new one before the node runs. dbt closes
  them all at the invocation's end.

Three smaller ones, found in a later profile of the same build:

- **Compiled SQL written to files nobody reads.** dbt writes each node's compiled SQL and the
  statement it ran under ``target/compiled`` and ``target/run`` (a tenth of the nodes'
  samples on a slow disk). An in-process build's target is a temporary directory, and the
  results come back in memory (the node keeps its ``compiled_code``): the files are not
  written.
- **A type tester per query result.** dbt turns each statement's result into an agate table
  with a new ``TypeTester`` whose date types each build a ``parsedatetime`` calendar (its
  locale constants: 4-5 % of the samples). Testers are kept by their arguments, as dbt keeps
  its default one (``DEFAULT_TYPE_TESTER``, shared by every thread).
- **Events built for nobody.** Each event's fields are turned into a protobuf message when
  the event is created (``BaseEvent.__init__``: ``ParseDict``, 8 % of the samples), before
  it is fired and found unheard. An event created during the invocation keeps its fields
  and builds its message when something first reads it (a logger, a callback, an attribute).

Each is installed for one invocation (callers hold ``inprocess._LOCK``: one at a time) and put
back afterwards; with ``LIFECYCLE_DBT_LEAN=false`` dbt runs as it comes. Only how dbt does its
own work changes: the models' SQL is the same (a reused session adds a DISCARD ALL) and builds
the same tables (tests/dbt/test_dbt_lean.py).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

# compiled template code by (native, capture_macros, source); a project's sources are few
_CODE: dict[tuple[bool, bool, str], Any] = {}
_CODE_LOCK = threading.Lock()
_CODE_LIMIT = 20_000
_LEVELS = {"debug": 0, "test": 1, "info": 2, "warn": 3, "error": 4}
# the psycopg2 handles (by id) released after a node and not reset since (one invocation)
_KEPT: set[int] = set()
# agate type testers by (text-only columns, null strings); dbt asks for a handful of kinds
_TESTERS: dict[tuple[frozenset, tuple | None], Any] = {}


def _get_template(string: Any, ctx: dict, node: Any = None, capture_macros: bool = False,
                  native: bool = False) -> Any:
    """dbt_common.clients.jinja.get_template with the compiled code of a source kept."""
    from dbt_common.clients import jinja as common_jinja

    with common_jinja.catch_jinja(node):
        env = common_jinja.get_environment(node, capture_macros, native=native)
        source = str(string)
        key = (native, capture_macros, source)
        code = _CODE.get(key)
        if code is None:
            code = env.compile(source)  # a syntax error raises here, as from_string did
            with _CODE_LOCK:
                if len(_CODE) >= _CODE_LIMIT:
                    _CODE.clear()
                _CODE[key] = code
        return env.template_class.from_code(env, code, env.make_globals(ctx), None)


def _level(event: Any, level: Any) -> int:
    tag = level if level is not None else event.level_tag()
    return _LEVELS.get(getattr(tag, "value", tag), len(_LEVELS))


def unheard(manager: Any, event: Any, level: Any = None,
            force_warn_or_error_handling: bool = False) -> bool:
    """True when no logger or callback of ``manager`` would receive ``event``: below every
    logger's level and not a warning (--warn-error), not a print event (dbt prints those at
    any level), and no callback but dbt's own tracking of behaviour-change warnings."""
    from dbt.tracking import track_behavior_change_warn
    from dbt_common.events.logger import PRINT_EVENT_NAMES

    if force_warn_or_error_handling or type(event).__name__ in PRINT_EVENT_NAMES:
        return False
    mine = _level(event, level)
    if mine >= _LEVELS["warn"]:
        return False
    if any(cb is not track_behavior_change_warn for cb in manager.callbacks):
        return False
    return all(_LEVELS.get(getattr(lg.level, "value", lg.level), 0) > mine
               for lg in manager.loggers)


def keep_session(manager: Any) -> bool:
    """The release of a node's connection (dbt's ``BaseConnectionManager.release``): the
    thread's PostgreSQL session is kept for its next node, its transaction rolled back now
    (dbt's, or one psycopg2 began by itself for a statement dbt ran outside one: its locks
    must not be held while the thread waits); True when kept. False (dbt closes it) for a
    connection never opened, not PostgreSQL's, or one whose rollback fails."""
    conn = manager.get_if_exists()
    if conn is None or conn.type != "postgres" or conn.state != "open":
        return False
    handle = conn.handle
    if getattr(handle, "closed", 1):
        return False
    try:
        handle.rollback()
    except Exception:  # noqa: BLE001 - any doubt: dbt closes it, as it always did
        return False
    conn.transaction_open = False
    _KEPT.add(id(handle))
    return True


def reset_session(manager: Any, conn: Any) -> None:
    """When a thread takes its kept session for its next node (dbt's ``set_connection_name``):
    ``DISCARD ALL`` resets it as a new session would be (temp tables, settings, prepared
    statements, session locks), its autocommit put back as it was. A session the server or
    the network dropped while it waited fails here, not in the node: it is closed and the node
    gets a new one, as dbt's own way would have given it."""
    handle = conn._handle  # not .handle: that opens a connection dbt has not opened yet
    if id(handle) not in _KEPT:
        return
    _KEPT.discard(id(handle))
    try:
        if handle.closed:
            raise ConnectionError("closed while kept")
        autocommit = handle.autocommit  # a profile may ask for autocommit sessions
        handle.autocommit = True  # DISCARD ALL cannot run in a transaction
        try:
            with handle.cursor() as cursor:
                cursor.execute("discard all")
        finally:
            handle.autocommit = autocommit
    except Exception:  # noqa: BLE001 - dropped or broken: a new session, as dbt would open
        from dbt.adapters.contracts.connection import ConnectionState, LazyHandle

        try:
            handle.close()
        except Exception:  # noqa: BLE001, S110 - it is being replaced either way
            pass
        conn.handle = LazyHandle(manager.open)
        conn.state = ConnectionState.CLOSED


_PENDING = "_lean_pending"  # an event's fields while its message is not built
_ACCESSORS: list[Any] = []  # BaseEvent's own __init__, once its accessors are replaced


def pending_event(event: Any, *args: Any, **kwargs: Any) -> None:
    """``BaseEvent.__init__`` during an invocation: the fields kept, the message not built."""
    object.__setattr__(event, _PENDING, (args, kwargs))


def _built(event: Any) -> None:
    pending = event.__dict__.pop(_PENDING, None)
    if pending is not None:
        _ACCESSORS[0](event, *pending[0], **pending[1])  # dbt's own __init__


def lazy_accessors() -> None:
    """BaseEvent's attribute access builds a pending event's message first. Installed once and
    left: an event created in an invocation may be read after it, and for an event built at
    once they do what dbt's own do."""
    from dbt_common.events.base_types import BaseEvent

    if _ACCESSORS:
        return
    own_init, own_get, own_set = (BaseEvent.__dict__[k] for k in
                                  ("__init__", "__getattr__", "__setattr__"))

    def getattr_(event: Any, key: str) -> Any:
        if _PENDING in event.__dict__:
            _built(event)
            return getattr(event, key)
        return own_get(event, key)

    def setattr_(event: Any, key: str, value: Any) -> None:
        if key != "pb_msg":
            _built(event)
        own_set(event, key, value)

    _ACCESSORS.append(own_init)
    BaseEvent.__getattr__ = getattr_
    BaseEvent.__setattr__ = setattr_


def no_file(node: Any, project_root: str, path: Any, code: str) -> None:
    """dbt's ``ParsedNode.write_node`` (compiled SQL and the statement run, under target/):
    not written; the node keeps its code in memory."""


def type_tester(own: Any) -> Any:
    """dbt's ``agate_helper.build_type_tester`` with each kind of tester built once."""

    def build(text_columns: Any, string_null_values: Any = ("null", "")) -> Any:
        key = (frozenset(text_columns),
               None if string_null_values is None else tuple(string_null_values))
        tester = _TESTERS.get(key)
        if tester is None:
            tester = _TESTERS.setdefault(key, own(key[0], string_null_values))
        return tester

    return build


@contextmanager
def lean_invocation() -> Iterator[None]:
    """The shortcuts above for the length of one in-process dbt invocation."""
    from dbt.adapters.base.connections import BaseConnectionManager
    from dbt.clients import jinja as dbt_jinja
    from dbt.contracts.graph.nodes import ParsedNode
    from dbt_common.clients import agate_helper
    from dbt_common.clients import jinja as common_jinja
    from dbt_common.events.base_types import BaseEvent
    from dbt_common.events.event_manager import EventManager

    own = (common_jinja.get_template, dbt_jinja.get_template,
           EventManager.__dict__["fire_event"], BaseConnectionManager.__dict__["release"],
           BaseConnectionManager.__dict__["set_connection_name"])
    own_fire, own_release, own_name = own[2], own[3], own[4]
    own_write, own_tester = ParsedNode.__dict__["write_node"], agate_helper.build_type_tester

    def fire_event(manager: Any, e: Any, level: Any = None, node: Any = None,
                   force_warn_or_error_handling: bool = False) -> None:
        if unheard(manager, e, level, force_warn_or_error_handling):
            return
        own_fire(manager, e, level, node, force_warn_or_error_handling)

    def release(manager: Any) -> None:
        if not keep_session(manager):
            own_release(manager)

    def set_connection_name(manager: Any, name: str | None = None) -> Any:
        conn = own_name(manager, name)
        reset_session(manager, conn)
        return conn

    common_jinja.get_template = dbt_jinja.get_template = _get_template
    EventManager.fire_event = fire_event
    BaseConnectionManager.release = release
    BaseConnectionManager.set_connection_name = set_connection_name
    ParsedNode.write_node = no_file
    agate_helper.build_type_tester = type_tester(own_tester)
    lazy_accessors()
    BaseEvent.__init__ = pending_event
    try:
        yield
    finally:
        common_jinja.get_template, dbt_jinja.get_template = own[0], own[1]
        EventManager.fire_event = own_fire
        BaseConnectionManager.release = own_release
        BaseConnectionManager.set_connection_name = own_name
        ParsedNode.write_node = own_write
        agate_helper.build_type_tester = own_tester
        BaseEvent.__init__ = _ACCESSORS[0]
        _KEPT.clear()
