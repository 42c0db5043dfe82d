"""Shared fixtures: one embedded PostgreSQL for the session, a fresh database per test.

``LIFECYCLE_TEST_WAREHOUSE_URL`` points the suite at another server instead (any database on
it; tests create and drop their own databases there).
"""

from __future__ import annotations

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


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """URL of a server the tests may create databases on."""
    external = os.environ.get("LIFECYCLE_TEST_WAREHOUSE_URL")
    if external:
        yield external
        return
    # Not under pytest's basetemp: a concurrent pytest session prunes old basetemps, and a
    # PostgreSQL whose data directory vanishes shuts itself down mid-run.
    state = Path(tempfile.mkdtemp(prefix="lifecycle-test-warehouse-"))
    wh = EmbeddedWarehouse(state)
    url = wh.up()
    yield url
    wh.down()
    shutil.rmtree(state, ignore_errors=True)


def _with_db(url: str, db: str) -> str:
    return url.rsplit("/", 1)[0] + "/" + db


@pytest.fixture
def fresh_db(server_url: str) -> Iterator[str]:
    """A new, migrated, empty database; dropped after the test."""
    name = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(_with_db(server_url, "postgres"), autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    url = _with_db(server_url, name)
    migrate(url)
    yield url
    with psycopg.connect(_with_db(server_url, "postgres"), autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')
