"""The ops staging models and the message_delivery mart built by the real dbt on real events."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import psycopg
import pytest
from psycopg.rows import dict_row

from lifecycle.delivery.dispatch import skip_suppressed
from lifecycle.delivery.webhooks.events import Event, write_events
from lifecycle.transform.dbt import DbtError, build, run_dbt

pytestmark = pytest.mark.slow

D = date(2026, 6, 1)
T0 = datetime(2026, 6, 1, 10, tzinfo=UTC)


def _outbox(url: str) -> list[int]:
    with psycopg.connect(url) as conn:
        return [conn.execute(
            "insert into ops.outbox (message_key, plan_date, customer_id, phase, step,"
            " cycle_key, channel, to_address, body, send_at, window_end_at, deadline_at, status)"
            " values (%s, %s, %s, 'retention', 1, 'M', %s, %s, 'Hi', %s, %s, %s, %s)"
            " returning outbox_id",
            (f"k{cid}", D, cid, ch, to, T0, T0 + timedelta(hours=10), T0 + timedelta(hours=24),
             status),
        ).fetchone()[0] for cid, ch, to, status in [
            ("A", "email", "a@example.com", "sent"),
            ("B", "sms", "+380671110002", "sent"),
            ("C", "sms", "+380671110003", "planned"),
        ]]


def _event(kind: str, provider: str, oid: int | None, minutes: int, **kw) -> Event:
    return Event(provider=provider, channel="email" if provider == "sendgrid" else "sms",
                 event_type=kind, occurred_at=T0 + timedelta(minutes=minutes),
                 dedupe_key=f"{provider}|{oid}|{kind}|{minutes}", outbox_id=oid, **kw)


def test_message_delivery_has_one_row_per_message_with_its_furthest_status(fresh_db, tmp_path):
    a, b, c = _outbox(fresh_db)
    write_events(fresh_db, [
        _event("processed", "sendgrid", a, 0),
        _event("delivered", "sendgrid", a, 1),
        _event("open", "sendgrid", a, 30),
        _event("click", "sendgrid", a, 31),
        _event("open", "sendgrid", a, 90),
        _event("queued", "twilio", b, 0),
        _event("sent", "twilio", b, 1),
        _event("undelivered", "twilio", b, 2),
        # C replied STOP before it was sent: dispatch will expire its planned row
        _event("inbound_opt_out", "twilio", None, 3, address="+380671110003",
               suppression="opted_out"),
    ])
    with psycopg.connect(fresh_db) as conn:
        assert skip_suppressed(conn) == 1
    result = build(fresh_db, D, select=["staging.ops", "message_delivery"], target_path=tmp_path)
    # the mart's unit test (status ranking edges) ran in this build too
    assert "message_delivery_furthest_status_and_first_timestamps" in result.stdout
    with psycopg.connect(fresh_db, row_factory=dict_row) as conn:
        rows = conn.execute(
            "select outbox_id, delivery_status, last_event_status, opens, clicks, events,"
            " delivered_at, first_opened_at, failed_at, skip_reason"
            " from analytics.message_delivery order by outbox_id").fetchall()
        staged = conn.execute(
            "select message_status, count(*) from analytics.stg_ops__message_events"
            " group by 1 order by 1 nulls first").fetchall()
    assert [(r["outbox_id"], r["delivery_status"], r["last_event_status"], r["opens"],
             r["clicks"], r["events"], r["skip_reason"]) for r in rows] == [
        (a, "clicked", "opened", 2, 1, 5, None),
        (b, "undelivered", "undelivered", 0, 0, 3, None),
        (c, "skipped", None, 0, 0, 0, "opted_out"),
    ]
    assert rows[0]["delivered_at"] == T0 + timedelta(minutes=1)
    assert rows[0]["first_opened_at"] == T0 + timedelta(minutes=30)
    assert rows[1]["failed_at"] == T0 + timedelta(minutes=2) and rows[1]["delivered_at"] is None
    assert [(s["message_status"], s["count"]) for s in staged] == [
        (None, 1), ("accepted", 2), ("clicked", 1), ("delivered", 1), ("opened", 2), ("sent", 1),
        ("undelivered", 1)]


def test_ops_keys_are_tested_by_the_tables_unique_indexes(fresh_db, tmp_path):
    # stg_ops__outbox and stg_ops__skips are unique by ops' primary keys, checked in the
    # catalog (their checks' unique_by_constraint) rather than by grouping the message history
    # each day
    args = ["build", "--select", "staging.ops", "--exclude", "resource_type:unit_test"]
    result = run_dbt(fresh_db, args, as_of=D, target_path=tmp_path)
    assert "PASS checks_stg_ops__skips" in result.stdout
    assert "PASS checks_stg_ops__outbox" in result.stdout
    # a key only unique for some rows (a partial index) does not make the view unique
    with psycopg.connect(fresh_db) as conn:
        conn.execute("alter table ops.skips drop constraint skips_pkey")
        conn.execute("create unique index on ops.skips (plan_date, customer_id, phase, step)"
                     " where reason = 'control_group'")
    with pytest.raises(DbtError) as failed:
        run_dbt(fresh_db, args, as_of=D, target_path=tmp_path)
    assert "FAIL 1 checks_stg_ops__skips" in failed.value.output
    assert "FAIL 1 checks_stg_ops__outbox" not in failed.value.output


def test_message_delivery_incremental_build_keeps_untouched_rows_and_equals_a_full_one(
    fresh_db, tmp_path
):
    # no lookback: only what was written after the first build is computed again
    no_lookback = {"message_delivery_lookback_hours": "0"}
    a, b, c = _outbox(fresh_db)
    write_events(
        fresh_db, [_event("processed", "sendgrid", a, 0), _event("queued", "twilio", b, 0)]
    )
    select = ["staging.ops", "message_delivery"]
    build(fresh_db, D, select=select, target_path=tmp_path, unit_tests=False, dbt_vars=no_lookback)
    query = (
        "select outbox_id, outbox_status, delivery_status, last_event_status, events, opens,"
        " first_opened_at, failed_at from analytics.message_delivery order by outbox_id"
    )
    with psycopg.connect(fresh_db) as conn:
        kept_at = conn.execute(
            "select xmin::text from analytics.message_delivery where outbox_id = %s", (c,)
        ).fetchone()[0]
        # later: an open of a's mail, b's row failed, a new message
        conn.execute(
            "update ops.outbox set status = 'failed', last_error = 'x', updated_at = now()"
            " where outbox_id = %s", (b,))
        (d,) = conn.execute(
            "insert into ops.outbox (message_key, plan_date, customer_id, phase, step,"
            " cycle_key, channel, to_address, body, send_at, window_end_at, deadline_at, status)"
            " values ('kD', %s, 'D', 'retention', 1, 'M', 'email', 'd@example.com', 'Hi', %s,"
            " %s, %s, 'sent') returning outbox_id",
            (D, T0, T0 + timedelta(hours=10), T0 + timedelta(hours=24)),
        ).fetchone()
    write_events(fresh_db, [_event("open", "sendgrid", a, 60)])
    build(fresh_db, D, select=select, target_path=tmp_path, unit_tests=False, dbt_vars=no_lookback)
    with psycopg.connect(fresh_db) as conn:
        incremental = conn.execute(query).fetchall()
        same_place = conn.execute(
            "select xmin::text from analytics.message_delivery where outbox_id = %s", (c,)
        ).fetchone()[0]
    assert [(r[0], r[1], r[2], r[4], r[5]) for r in incremental] == [
        (a, "sent", "opened", 2, 1),
        (b, "failed", "accepted", 1, 0),
        (c, "planned", "planned", 0, 0),
        (d, "sent", "sent", 0, 0),
    ]
    # c was neither updated nor reported on: its row was kept (the same xmin)
    assert same_place == kept_at
    run_dbt(fresh_db, ["build", "--select", *select, "--exclude", "resource_type:unit_test",
                       "--full-refresh"], as_of=D, target_path=tmp_path)
    with psycopg.connect(fresh_db) as conn:
        assert conn.execute(query).fetchall() == incremental
    # a table built before the marks' columns existed: computed again in full, then incremental
    with psycopg.connect(fresh_db) as conn:
        conn.execute("alter table analytics.message_delivery drop column _outbox_updated_at,"
                     " drop column _events_received_at")
    write_events(fresh_db, [_event("sent", "twilio", b, 5)])
    build(fresh_db, D, select=select, target_path=tmp_path, unit_tests=False, dbt_vars=no_lookback)
    with psycopg.connect(fresh_db) as conn:
        migrated = conn.execute(query).fetchall()
        marked = conn.execute(
            "select count(*) from analytics.message_delivery where _outbox_updated_at is not null"
        ).fetchone()[0]
    assert [(r[0], r[4]) for r in migrated] == [(a, 2), (b, 2), (c, 0), (d, 0)]
    assert marked == 4
    run_dbt(fresh_db, ["build", "--select", *select, "--exclude", "resource_type:unit_test",
                       "--full-refresh"], as_of=D, target_path=tmp_path)
    with psycopg.connect(fresh_db) as conn:
        assert conn.execute(query).fetchall() == migrated
