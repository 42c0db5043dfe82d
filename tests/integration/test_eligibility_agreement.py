"""dbt's phase eligibility agrees with the rule engine, and the history it feeds holds up.

docs/architecture.md #1: the rules file is the one source of truth for phases. dbt gets the
windows from it through the generated var lifecycle_phases; here the real dbt, on generated data,
selects exactly the (customer, phase, step) set planning.select_candidates selects, also for a rules
file that differs from dbt_project.yml's default. Then three consecutive days build
customer_lifecycle_history: spells are contiguous, never overlap, sum to customers x days, a
rerun changes nothing and a rewind rebuilds the same history.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from datetime import date, timedelta
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from lifecycle.airflow_env import airflow_env
from lifecycle.data.generator import generate
from lifecycle.planning.audience import select_candidates
from lifecycle.rules.conditions import Compiled
from lifecycle.rules.loading import load_rules, parse_rules
from lifecycle.settings import Settings
from lifecycle.transform.dbt import build
from lifecycle.transform.dbt_vars import render_condition

pytestmark = pytest.mark.slow

PROJECT = Path(__file__).resolve().parents[2]

D1 = date(2026, 5, 20)
DAYS = [D1, D1 + timedelta(days=1), D1 + timedelta(days=2)]
PHASES = {"activation", "stimulation", "cross_sell", "retention", "return"}

# Values of every kind the compiler binds, inlined into dbt's SQL: both must select the same.
LITERAL_RULES = """
version: 1
phases:
  - name: retention
    priority: 1
    audience:
      all:
        - {field: membership_status, in: [active, frozen, "it's", "a,b", "{x}"]}
        - {field: product, not_in: ["gym's", 'back\\slash']}
        - {field: lifetime_revenue, gte: 1000.5}
        - {field: timezone, ne: "Mars/Olympus"}
        - {field: last_visit_date, is_null: false}
        - any:
            - {field: has_renewal, eq: true}
            - not: {field: days_until_end, between: [14, 45]}
    channels: [sms]
    steps:
      - offer: {code: renew, title: "renew"}
        templates: {sms: "hi"}
"""


def _narrowed_rules(tmp_path: Path) -> Path:
    """The rules file with narrower windows than dbt_project.yml's default."""
    text = Settings().rules_path.read_text()
    for field, old, new in (
        ("days_since_purchase", "[20, 30]", "[25, 30]"),
        ("days_since_purchase", "[60, 90]", "[65, 90]"),
        ("days_since_end", "[60, 89]", "[70, 89]"),
    ):
        window = f"{{field: {field}, between: {old}}}"
        assert window in text, window
        text = text.replace(window, f"{{field: {field}, between: {new}}}", 1)
    # and a condition on another relation (customer_service_purchases, ref() in dbt)
    line = "        - {field: cross_sell_purchases_last_90d, eq: 0}\n"
    assert line in text
    text = text.replace(
        line, line + "        - not: {bought_service: {service: massage, within_days: 365}}\n", 1
    )
    rules_file = tmp_path / "phases.yml"
    rules_file.write_text(text)
    return rules_file


def _eligibility(conn: psycopg.Connection) -> set[tuple[str, str, int]]:
    rows = conn.execute(
        "select customer_id, phase, step from analytics.customer_phase_eligibility"
    ).fetchall()
    assert len(rows) == len(set(rows))
    return set(rows)


def _selected(conn: psycopg.Connection, rules, day: date, settings: Settings) -> set:
    return {
        (c.customer_id, c.phase.name, c.step.number)
        for c in select_candidates(conn, rules, day, settings)
    }


def _history(conn: psycopg.Connection) -> list[tuple]:
    return conn.execute(
        "select customer_id, valid_from, valid_to, stage, exponea_stage, eligible_phases, days "
        "from analytics.customer_lifecycle_history order by customer_id, valid_from"
    ).fetchall()


@pytest.fixture(autouse=True)
def _buildable_tests_only(monkeypatch):
    # a narrowed build (--select +model) runs only the tests whose parents it builds, as the
    # DAG does; dbt's default would also run e.g. the history's test of a selected parent
    monkeypatch.setenv("DBT_INDIRECT_SELECTION", "buildable")


@pytest.fixture(scope="module")
def club_url(server_url):
    name = "eligibility_agreement"
    base = server_url.rsplit("/", 1)[0]
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')
        conn.execute(f'create database "{name}"')
    url = f"{base}/{name}"
    generate(3000, date(2025, 3, 1), DAYS[-1] + timedelta(days=5), 11, url=url)
    yield url
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')


def test_dbt_eligibility_equals_the_rule_engine_selection(club_url, tmp_path):
    settings = Settings()
    rules = load_rules(settings.rules_path)
    build(club_url, D1, settings=settings, target_path=tmp_path)
    with psycopg.connect(club_url) as conn:
        dbt_set = _eligibility(conn)
        engine_set = _selected(conn, rules, D1, settings)
        priorities = dict(
            conn.execute(
                "select distinct phase, priority from analytics.customer_phase_eligibility"
            ).fetchall()
        )
    assert dbt_set == engine_set
    assert {phase for _, phase, _ in dbt_set} == PHASES, "generated data should reach every phase"
    # every return step: the three written ones and step 3 repeated up to step 6
    assert len({(p, s) for _, p, s in dbt_set if p == "return"}) == 6
    assert priorities == {p.name: p.phase.priority for p in rules.phases}


def test_dbt_follows_the_rules_file_in_use_not_its_default(club_url, tmp_path):
    """Narrower windows than dbt_project.yml's default: dbt must see them."""
    rules_file = _narrowed_rules(tmp_path)
    settings = Settings(rules_file=rules_file)
    edited = load_rules(rules_file)
    # without unit tests, as the daily runs: they pin the default windows
    build(
        club_url,
        D1,
        "+customer_phase_eligibility",
        settings=settings,
        target_path=tmp_path,
        unit_tests=False,
    )
    with psycopg.connect(club_url) as conn:
        dbt_set = _eligibility(conn)
        edited_set = _selected(conn, edited, D1, settings)
        default_set = _selected(conn, load_rules(Settings().rules_path), D1, settings)
    assert dbt_set == edited_set
    assert dbt_set != default_set
    assert dbt_set < default_set  # every window only narrowed


def test_inlined_literals_select_what_bound_parameters_select(club_url, tmp_path):
    rules = parse_rules(LITERAL_RULES, "literals.yml")
    condition = rules.phases[0].steps[0].condition
    build(club_url, D1, "+customer_facts", target_path=tmp_path, unit_tests=False)
    with psycopg.connect(club_url) as conn:
        bound = conn.execute(
            sql.SQL("select customer_id from analytics.customer_facts where {}").format(
                condition.sql
            ),
            condition.params,
        ).fetchall()
        inlined = conn.execute(
            "select customer_id from analytics.customer_facts where " + render_condition(condition)
        ).fetchall()
        everyone = conn.execute("select count(*) from analytics.customer_facts").fetchone()[0]
    assert 0 < len(bound) < everyone
    assert sorted(inlined) == sorted(bound)


# Values that spell the marker dbt_vars leaves for a relation dbt builds (REF_MARKER), next to a
# condition that reads that relation: they are data, never a relation and never broken SQL.
MARKER_RULES = """
version: 1
phases:
  - name: retention
    priority: 1
    audience:
      all:
        - field: membership_status
          in: [active, frozen, "__lifecycle_ref__customer_service_purchases__"]
        - {field: product, not_in: ["__lifecycle_ref__nope__", 'back\\slash __lifecycle_ref__x__']}
        - {field: timezone, ne: "it's __lifecycle_ref__customer_service_purchases__"}
        - not: {bought_service: {service: massage, within_days: 365}}
    channels: [sms]
    steps:
      - offer: {code: renew, title: "__lifecycle_ref__customer_service_purchases__"}
        templates: {sms: "hi __lifecycle_ref__customer_service_purchases__"}
"""


def test_values_spelling_the_ref_marker_stay_values_in_the_dbt_build(club_url, tmp_path):
    rules = parse_rules(MARKER_RULES, "marker.yml")
    condition = rules.phases[0].steps[0].condition
    settings = Settings()
    build(club_url, D1, "+customer_phase_eligibility", settings=settings, rules=rules,
          target_path=tmp_path, unit_tests=False)
    values = [v for v in condition.params if "__lifecycle_ref__" in str(v)]
    assert len(values) == 3
    with psycopg.connect(club_url) as conn:
        dbt_set = _eligibility(conn)
        engine_set = _selected(conn, rules, D1, settings)
        for value in values:  # each literal dbt ran holds the very value the rule engine binds
            literal = render_condition(Compiled(sql.SQL("%s"), [value]))
            assert "__lifecycle_ref__" not in literal
            cast = "::text[]" if isinstance(value, list) else "::text"
            assert conn.execute(f"select {literal}{cast}").fetchone()[0] == value
    assert dbt_set == engine_set
    assert {phase for _, phase, _ in dbt_set} == {"retention"}


def test_history_spells_over_three_consecutive_days(club_url, tmp_path):
    settings = Settings()
    rules = load_rules(settings.rules_path)
    customers_per_day: list[int] = []
    eligible_days: Counter = Counter()
    snapshots: dict[date, list[tuple]] = {}
    with psycopg.connect(club_url, autocommit=True) as conn:
        conn.execute("drop table if exists analytics.customer_lifecycle_history")
        conn.execute("drop table if exists analytics.metrics_phase_eligibility_monthly")
    for day in DAYS:
        # the unit tests ran in the first test; these builds are the days' data
        build(club_url, day, settings=settings, target_path=tmp_path, unit_tests=False)
        with psycopg.connect(club_url) as conn:
            customers_per_day.append(
                conn.execute("select count(*) from analytics.customer_facts").fetchone()[0]
            )
            eligibility = _eligibility(conn)
            assert eligibility == _selected(conn, rules, day, settings)
            eligible_days.update((p, s) for _, p, s in eligibility)
            snapshots[day] = _history(conn)

    spells = snapshots[DAYS[-1]]
    by_customer: dict[str, list[tuple]] = {}
    for row in spells:
        by_customer.setdefault(row[0], []).append(row)
    # every spell's days, and customers x days built in total
    assert all(
        days == (valid_to - valid_from).days + 1 for _, valid_from, valid_to, *_, days in spells
    )
    assert sum(row[6] for row in spells) == sum(customers_per_day)
    assert len(spells) > len(by_customer), "some customers should change stage or phase"
    for customer, rows in by_customer.items():
        # contiguous, no overlap, up to the last day, and a new spell only on a change
        assert rows[-1][2] == DAYS[-1], customer
        for before, after in zip(rows, rows[1:], strict=False):
            assert after[1] == before[2] + timedelta(days=1), (customer, before, after)
            assert after[3:6] != before[3:6], (customer, before, after)
        assert rows[0][1] >= DAYS[0]

    with psycopg.connect(club_url) as conn:
        # the open spells are today's stages and eligible sets
        today = set(
            conn.execute(
                "select customer_id, stage, exponea_stage, eligible_phases "
                "from analytics.customer_lifecycle_stage"
            ).fetchall()
        )
        assert today == {(r[0], r[3], r[4], r[5]) for r in spells if r[2] == DAYS[-1]}
        # the monthly eligibility metric counts the same customer-days
        metric = conn.execute(
            "select phase, step, sum(eligible_customer_days), sum(customer_days), max(days_built) "
            "from analytics.metrics_phase_eligibility_monthly group by 1, 2"
        ).fetchall()
        assert {(p, s): n for p, s, n, _, _ in metric if n} == dict(eligible_days)
        assert {(total, built) for *_, total, built in metric} == {(sum(customers_per_day), 3)}
        # retention metrics agree with customer_facts on D
        end, dead = conn.execute(
            "select sum(customers_end), sum(dead_contacts) "
            "from analytics.metrics_retention_monthly where month = %s",
            (DAYS[-1].replace(day=1),),
        ).fetchone()
        facts_active, facts_dead = conn.execute(
            "select count(*) filter (where has_active_membership), "
            "count(*) filter (where not sms_contactable and not email_contactable) "
            "from analytics.customer_facts"
        ).fetchone()
        assert (end, dead) == (facts_active, facts_dead)

    # A rerun of an earlier day changes nothing (a warning says so)...
    result = build(
        club_url, DAYS[1], "+customer_lifecycle_history", target_path=tmp_path, unit_tests=False
    )
    assert "leaves it unchanged" in result.stdout
    with psycopg.connect(club_url) as conn:
        assert _history(conn) == spells
    # ...a rewind to day 2 gives back day 2's history, and day 3 on top of it the same as before
    build(
        club_url,
        DAYS[1],
        "+customer_lifecycle_history",
        target_path=tmp_path,
        dbt_vars={"lifecycle_history_rewind": "true"},
        unit_tests=False,
    )
    with psycopg.connect(club_url) as conn:
        assert _history(conn) == snapshots[DAYS[1]]
    build(club_url, DAYS[2], "+customer_lifecycle_history", target_path=tmp_path, unit_tests=False)
    with psycopg.connect(club_url) as conn:
        assert _history(conn) == spells


def test_the_daily_dag_passes_the_rules_file_to_dbt(club_url, tmp_path):
    """Through Airflow: validate_rules' XCom reaches the Cosmos dbt tasks as the var."""
    day = DAYS[-1] + timedelta(days=1)
    rules_file = _narrowed_rules(tmp_path)
    home = tmp_path / "airflow"
    env = {
        **os.environ,
        **airflow_env(club_url, Settings()),
        "LIFECYCLE_WAREHOUSE_URL": club_url,
        "LIFECYCLE_RULES_FILE": str(rules_file),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
    }
    proc = subprocess.run(
        [sys.executable, str(PROJECT / "scripts" / "run_daily.py"), day.isoformat(), "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    states = [
        json.loads(line.split(" ", 1)[1])["state"]
        for line in proc.stdout.splitlines()
        if line.startswith("@@lifecycle-day ")
    ]
    assert proc.returncode == 0 and states == ["success"], (
        proc.stdout[-3000:],
        proc.stderr[-3000:],
    )
    settings = Settings(rules_file=rules_file)
    with psycopg.connect(club_url) as conn:
        dbt_set = _eligibility(conn)
        assert dbt_set == _selected(conn, load_rules(rules_file), day, settings)
        assert dbt_set < _selected(conn, load_rules(Settings().rules_path), day, settings)
        assert conn.execute(
            "select max(valid_to) from analytics.customer_lifecycle_history"
        ).fetchone() == (day,)
