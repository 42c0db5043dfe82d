"""Schema migrations: the ``raw`` tables the club's files load into and the ``ops`` tables the
outbox, skips, provider events, suppressions and runs live in (``sql/schema.sql``, idempotent).
"""

from __future__ import annotations

from importlib import resources

from psycopg import sql as pgsql

from lifecycle.warehouse.server import connect


def migrate(url: str) -> None:
    """Create the ``raw`` and ``ops`` schemas and tables (idempotent)."""
    sql = resources.files("lifecycle.warehouse").joinpath("sql/schema.sql").read_text()
    with connect(url) as conn:
        # One migration at a time: concurrent workers would race on CREATE ... IF NOT EXISTS.
        conn.execute("select pg_advisory_xact_lock(727001)")
        conn.execute(sql)


def ensure_schema(url: str, name: str) -> None:
    """Create the schema ``name`` if it is missing, one creator at a time.

    ``create schema if not exists`` races with itself: dbt invocations started together on an
    empty warehouse (the daily DAG runs one per model) can each find the schema missing and the
    second fails on the catalog's unique key. Created here first, they all find it.
    """
    with connect(url) as conn:
        conn.execute("select pg_advisory_xact_lock(727001)")
        conn.execute(pgsql.SQL("create schema if not exists {}").format(pgsql.Identifier(name)))
