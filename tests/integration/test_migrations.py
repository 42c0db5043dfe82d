"""The warehouse's schemas are created once, however many tasks start together."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

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


def test_channel_checks_of_an_old_shape_learn_the_call_channel(fresh_db):
    # the checks as they were before calls: sms and email, twilio and sendgrid
    old = {
        "ops.outbox": ("outbox_channel_check", "channel in ('sms', 'email')"),
        "ops.suppressions": ("suppressions_channel_check", "channel in ('sms', 'email')"),
        "ops.message_events": ("message_events_channel_check", "channel in ('sms', 'email')"),
    }
    with psycopg.connect(fresh_db) as conn:
        for tbl, (name, check) in old.items():
            conn.execute(f"alter table {tbl} drop constraint {name}")
            conn.execute(f"alter table {tbl} add constraint {name} check ({check})")
        conn.execute("alter table ops.message_events drop constraint message_events_provider_check")
        conn.execute("alter table ops.message_events add constraint message_events_provider_check"
                     " check (provider in ('sendgrid', 'twilio'))")
        conn.execute("insert into ops.suppressions (customer_id, channel, reason, source)"
                     " values ('C1', 'sms', 'opted_out', 'twilio')")
    with psycopg.connect(fresh_db) as conn, pytest.raises(psycopg.errors.CheckViolation):
        conn.execute("insert into ops.suppressions (customer_id, channel, reason, source)"
                     " values ('C2', 'call', 'manual', 'desk')")
    migrate(fresh_db)
    migrate(fresh_db)  # idempotent
    with psycopg.connect(fresh_db) as conn:
        conn.execute("insert into ops.suppressions (customer_id, channel, reason, source)"
                     " values ('C2', 'call', 'manual', 'desk')")
        conn.execute(
            "insert into ops.outbox (message_key, plan_date, customer_id, phase, step, cycle_key,"
            " channel, to_address, body, send_at, window_end_at, deadline_at) values"
            " ('k', '2026-06-15', 'C1', 'return', 3, 'm', 'call', '+380671234567', 'Hello',"
            " now(), now(), now())")
        conn.execute(
            "insert into ops.message_events (provider, channel, event_type, occurred_at,"
            " dedupe_key) values ('call_centre', 'call', 'call_reached', now(), 'x')")
        defs = conn.execute(
            "select conname, pg_get_constraintdef(oid) from pg_constraint"
            " where conname in ('outbox_channel_check', 'suppressions_channel_check',"
            " 'message_events_channel_check', 'message_events_provider_check')"
            " order by 1").fetchall()
        kept = conn.execute("select customer_id, channel from ops.suppressions order by 1")
        assert kept.fetchall() == [("C1", "sms"), ("C2", "call")]
    assert len(defs) == 4
    assert all("call" in d for _, d in defs)
    with psycopg.connect(fresh_db) as conn, pytest.raises(psycopg.errors.CheckViolation):
        conn.execute("insert into ops.message_events (provider, channel, event_type, occurred_at,"
                     " dedupe_key) values ('call_centre', 'fax', 'x', now(), 'y')")
