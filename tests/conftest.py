"""Shared fixtures: one embedded PostgreSQL for the session, a fresh database per test.

``LIFECYCLE_TEST_WAREHOUSE_URL`` points the suite at another server instead (any database on
it; tests create and drop their own databases there).

``make test`` runs the suite on pytest-xdist workers (``-n 2 --dist loadgroup``). Each worker
is a pytest session of its own: its own embedded server, its own migrated template database,
its own dbt target directory. A module whose tests share a module-scoped fixture (a club built
once) is sent to one worker whole, so the fixture is built once; modules with slow tests are
handed out first, so the longest ones do not start last.
"""

from __future__ import annotations

import ast
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from lifecycle.warehouse.migrations import migrate
from lifecycle.warehouse.server import EmbeddedWarehouse

PROJECT_DIR = Path(__file__).resolve().parents[1]
# "gw0", "gw1", ... under xdist; "main" in a plain run
WORKER = os.environ.get("PYTEST_XDIST_WORKER", "main")

if WORKER != "main" and "DBT_TARGET_PATH" not in os.environ:
    # dbt runs that name no target_path (`lifecycle run`, some tests) write dbt_project/target;
    # two workers' runs at once would rewrite each other's manifest and partial parse file.
    _target = Path(tempfile.mkdtemp(prefix=f"lifecycle-test-dbt-{WORKER}-"))
    os.environ["DBT_TARGET_PATH"] = str(_target)
    os.environ["DBT_LOG_PATH"] = str(_target / "logs")


def _unique_name(prefix: str) -> str:
    """A database name no other test, module or worker uses (the server may be shared)."""
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """URL of a server the tests may create databases on."""
    external = os.environ.get("LIFECYCLE_TEST_WAREHOUSE_URL")
    if external:
        yield external
        return
    # Not under pytest's basetemp: a concurrent pytest session prunes old basetemps, and a
    # PostgreSQL whose data directory vanishes shuts itself down mid-run.
    state = Path(tempfile.mkdtemp(prefix=f"lifecycle-test-warehouse-{WORKER}-"))
    wh = EmbeddedWarehouse(state)
    url = wh.up()
    yield url
    wh.down()
    shutil.rmtree(state, ignore_errors=True)


def _with_db(url: str, db: str) -> str:
    return url.rsplit("/", 1)[0] + "/" + db


@pytest.fixture(scope="session")
def migrated_template(server_url: str) -> Iterator[str]:
    """Name of a migrated, empty database that ``fresh_db`` clones (never connected to after
    its migration: PostgreSQL copies a template only while no session is open on it)."""
    name = _unique_name("t_template")
    admin = _with_db(server_url, "postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    migrate(_with_db(server_url, name))
    yield name
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')


@pytest.fixture
def fresh_db(server_url: str, migrated_template: str) -> Iterator[str]:
    """A new, migrated, empty database; dropped after the test.

    A copy of ``migrated_template``: the same as creating and migrating one (embedded server,
    with its drop: 0.03 s against 0.11-0.23 s; bench/RESULTS.md "Test suite time")."""
    name = _unique_name("t")
    with psycopg.connect(_with_db(server_url, "postgres"), autocommit=True) as conn:
        conn.execute(f'create database "{name}" template "{migrated_template}"')
    url = _with_db(server_url, name)
    yield url
    with psycopg.connect(_with_db(server_url, "postgres"), autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')


def _shares_a_fixture(path: Path) -> bool:
    """Whether the test file ``path`` defines a fixture wider than one test (a club built once
    for the module): its tests must run on one worker, or each worker builds the club again."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef):
            for deco in node.decorator_list:
                if isinstance(deco, ast.Call) and ast.unparse(deco.func).endswith("fixture"):
                    scope = next((k.value for k in deco.keywords if k.arg == "scope"), None)
                    if isinstance(scope, ast.Constant) and scope.value != "function":
                        return True
    return False


def pytest_xdist_make_scheduler(config: pytest.Config, log):  # noqa: ANN201 - xdist's types
    """``--dist loadgroup``: every test is a unit of work of its own, except that a file whose
    tests share a module-scoped fixture is one unit. (xdist's own loadgroup reads
    ``xdist_group`` marks from node ids, which pytest 9 no longer lets it rewrite.)"""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    root = config.rootpath
    shared: dict[str, bool] = {}

    class ModuleFixtureScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            if path not in shared:
                shared[path] = path.endswith(".py") and _shares_a_fixture(root / path)
            return path if shared[path] else nodeid

    # units in the order the workers collected them (slow modules first), not by size
    config.option.loadscopereorder = False
    return ModuleFixtureScheduling(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under xdist, modules with slow tests first: the longest units start early, instead of one
    worker finishing an Airflow test alone at the end. Whole modules move, so a module's
    fixtures are still set up once; every worker computes the same order, as xdist requires."""
    if WORKER == "main":
        return
    modules: dict[str, list[pytest.Item]] = {}
    for item in items:
        modules.setdefault(item.nodeid.split("::", 1)[0], []).append(item)
    slow = [p for p, its in modules.items() if any(i.get_closest_marker("slow") for i in its)]
    rest = [p for p in modules if p not in slow]
    items[:] = [i for p in (*slow, *rest) for i in modules[p]]
