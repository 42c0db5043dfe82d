"""phase_conversions built by the real dbt day after day equals a full rebuild of that day."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import psycopg
import pytest

from lifecycle.data.generator import generate
from lifecycle.rules.loading import load_rules
from lifecycle.settings import get_settings
from lifecycle.transform.dbt import run_dbt
from lifecycle.transform.dbt_vars import phase_vars

pytestmark = pytest.mark.slow

# Messages and control-group skips from 04-01 to 06-30 for a generated club. Each customer
# has one phase (by hash), so a customer messaged on several days repeats its exposure, and a
# control customer is skipped every third day (planning holds a step back once per
# membership; repeats must not open new exposures).
MESSAGES = """
insert into ops.outbox (message_key, plan_date, customer_id, phase, step, cycle_key, channel,
    to_address, body, send_at, window_end_at, deadline_at, status, sent_at)
select 't-' || d || '-' || customer_id, d, customer_id,
    (array['activation', 'stimulation', 'cross_sell', 'retention', 'return'])
        [1 + abs(hashtext(customer_id || 'phase')) % 5],
    1 + abs(hashtext(customer_id || 'step')) % 2, 'c', 'sms', '+380000000000', 'x',
    d + time '10:00', d + time '20:00', d + time '21:00',
    case when abs(hashtext(customer_id || d || 'status')) % 10 = 0 then 'failed' else 'sent' end,
    d + time '10:00'
from generate_series(date '2025-04-01', date '2025-06-30', interval '1 day') as g (d),
    raw.customers
where abs(hashtext(customer_id || d)) % 30 = 0;

insert into ops.skips (plan_date, customer_id, phase, step, reason, channel, variant)
select d, customer_id,
    (array['activation', 'stimulation', 'cross_sell', 'retention', 'return'])
        [1 + abs(hashtext(customer_id || 'control')) % 5],
    1, 'control_group', 'sms', 'A'
from generate_series(date '2025-04-01', date '2025-06-30', interval '3 days') as g (d),
    raw.customers
where abs(hashtext(customer_id || 'control')) % 7 = 0
    and abs(hashtext(customer_id || date_trunc('month', d))) % 2 = 0;
"""

COLUMNS = (
    "customer_id, phase, step, arm, variant, channel, membership_id, exposed_on,"
    " conversion_event, within_days, grace_days, window_ends_on, is_window_closed, converted,"
    " converted_on, revenue"
)


def _rows(url: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            f"select {COLUMNS} from analytics.phase_conversions order by {COLUMNS}"
        ).fetchall()


def _computed_on(url: str) -> dict[date, int]:
    with psycopg.connect(url) as conn:
        return dict(
            conn.execute(
                "select computed_on, count(*) from analytics.phase_conversions group by 1"
            ).fetchall()
        )


QUIET = ["--exclude", "resource_type:unit_test", "resource_type:test"]


def _club(url: str, customers: int, seed: int, day: date, target: Path) -> None:
    """A generated club with MESSAGES, phase_conversions and what it reads built as of day."""
    generate(customers, date(2025, 1, 1), date(2025, 6, 30), seed=seed, url=url)
    with psycopg.connect(url) as conn:
        conn.execute(MESSAGES)
    run_dbt(
        url,
        ["build", "--select", "+phase_conversions", "--full-refresh", *QUIET],
        as_of=day,
        target_path=target,
    )


def test_phase_conversions_day_by_day_equal_a_full_rebuild_forward_back_and_on_rule_change(
    fresh_db: str, tmp_path: Path
) -> None:
    # the models it reads are not as-of models: built once, with the club's whole history
    _club(fresh_db, 1_500, 7, date(2025, 6, 30), tmp_path)
    args = ["build", "--select", "phase_conversions", *QUIET]

    def full(day: date, **dbt_vars: str) -> list[tuple]:
        run_dbt(
            fresh_db,
            [*args, "--full-refresh"],
            as_of=day,
            target_path=tmp_path,
            dbt_vars=dbt_vars or None,
        )
        return _rows(fresh_db)

    # forward, with gaps longer and shorter than the 7 settle days
    days = [
        date(2025, 5, 10),
        date(2025, 5, 11),
        date(2025, 5, 25),
        date(2025, 6, 1),
        date(2025, 6, 14),
        date(2025, 6, 30),
    ]
    run_dbt(fresh_db, [*args, "--full-refresh"], as_of=days[0], target_path=tmp_path)
    for day in days[1:]:
        run_dbt(fresh_db, args, as_of=day, target_path=tmp_path)
    incremental = _rows(fresh_db)
    computed = _computed_on(fresh_db)
    assert incremental == full(days[-1])
    # the builds before kept their final rows; the last one computed only the rest
    assert sum(n for day, n in computed.items() if day < days[-1]) > 100
    assert computed[days[-1]] > 100
    assert sum(1 for row in incremental if row[13]) > 50  # converted
    assert {row[3] for row in incremental} == {"treated", "control"}
    assert {row[1] for row in incremental} == {
        "activation",
        "stimulation",
        "cross_sell",
        "retention",
        "return",
    }

    # back to 06-01: the rows it cannot see settled are computed again, later exposures go
    run_dbt(fresh_db, args, as_of=date(2025, 6, 1), target_path=tmp_path)
    back = _rows(fresh_db)
    assert max(row[7] for row in back) <= date(2025, 6, 1)
    assert back == full(date(2025, 6, 1))

    # a rules change: activation's window shortened to 7 days and a grace of 3 days; every
    # activation row, final or not, is computed with the new window
    run_dbt(fresh_db, args, as_of=date(2025, 6, 30), target_path=tmp_path)
    phases = json.loads(phase_vars(load_rules(get_settings().rules_path))["lifecycle_phases"])
    for phase in phases["phases"]:
        if phase["name"] == "activation":
            phase["conversion"].update(within_days=7)
        if phase["name"] == "retention":
            phase["conversion"].update(grace_days=3)
    changed = {"lifecycle_phases": json.dumps(phases)}
    run_dbt(fresh_db, args, as_of=date(2025, 6, 30), target_path=tmp_path, dbt_vars=changed)
    shortened = _rows(fresh_db)
    assert {row[9] for row in shortened if row[1] == "activation"} == {7}
    assert {row[10] for row in shortened if row[1] == "retention"} == {3}
    assert shortened == full(date(2025, 6, 30), **changed)
    assert shortened != incremental


def test_a_table_without_the_final_row_columns_is_computed_again(
    fresh_db: str, tmp_path: Path
) -> None:
    # phase_conversions before it was incremental: as_of_date, no computed_on, window days
    # or dbt_invocation_id
    day = date(2025, 6, 30)
    _club(fresh_db, 300, 3, day, tmp_path)
    expected = _rows(fresh_db)
    with psycopg.connect(fresh_db) as conn:
        conn.execute(
            "alter table analytics.phase_conversions drop column computed_on,"
            " drop column within_days, drop column grace_days, drop column dbt_invocation_id,"
            " add column as_of_date date"
        )
        conn.execute("update analytics.phase_conversions set converted = not converted")
    run_dbt(
        fresh_db,
        ["build", "--select", "phase_conversions", *QUIET],
        as_of=day,
        target_path=tmp_path,
    )
    assert _rows(fresh_db) == expected
    with psycopg.connect(fresh_db) as conn:
        columns = {
            row[0]
            for row in conn.execute(
                "select column_name from information_schema.columns"
                " where table_schema = 'analytics' and table_name = 'phase_conversions'"
            )
        }
    assert "as_of_date" not in columns and "computed_on" in columns
