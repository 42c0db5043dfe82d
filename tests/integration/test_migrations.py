"""The warehouse's schemas are created once, however many tasks start together."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import psycopg

from lifecycle.warehouse.migrations import ensure_schema


def test_ensure_schema_from_many_tasks_at_once(fresh_db):
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda _: ensure_schema(fresh_db, "analytics_race"), range(16)))
    with psycopg.connect(fresh_db) as conn:
        found = conn.execute("select count(*) from pg_namespace where nspname = %s",
                             ("analytics_race",)).fetchone()[0]
    assert found == 1
