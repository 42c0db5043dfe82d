"""The warehouse's schemas are created once, however many tasks start together."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import psycopg

from lifecycle.warehouse.migrations import ensure_schema, migrate


def test_ensure_schema_from_many_tasks_at_once(fresh_db):
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda _: ensure_schema(fresh_db, "analytics_race"), range(16)))
    with psycopg.connect(fresh_db) as conn:
        found = conn.execute("select count(*) from pg_namespace where nspname = %s",
                             ("analytics_race",)).fetchone()[0]
    assert found == 1


def test_skips_of_an_old_shape_get_the_control_message_columns(fresh_db):
    # ops.skips as it was before control rows recorded their would-have-been message
    with psycopg.connect(fresh_db) as conn:
        conn.execute("alter table ops.skips drop column channel, drop column variant,"
                     " drop column message_key")
        conn.execute("insert into ops.skips (plan_date, customer_id, phase, step, reason)"
                     " values ('2026-06-01', 'C1', 'retention', 1, 'control_group')")
    migrate(fresh_db)
    migrate(fresh_db)  # idempotent
    with psycopg.connect(fresh_db) as conn:
        rows = conn.execute(
            "select customer_id, reason, channel, variant, message_key from ops.skips"
        ).fetchall()
        index = conn.execute(
            "select count(*) from pg_indexes where schemaname = 'ops'"
            " and indexname = 'skips_control_customer_idx'"
        ).fetchone()[0]
    assert rows == [("C1", "control_group", None, None, None)]
    assert index == 1
