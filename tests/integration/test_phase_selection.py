"""Every default phase selects exactly the customers it should, at each edge of its window.

Customers sit one day inside and one day outside every boundary of include/rules/phases.yml;
the real planning path (plan_day on a fresh database) runs over them, and every (customer,
phase, step) the rules select shows up as a message or a skip row with a reason, so the union of
the two is exactly the selection.
"""

from __future__ import annotations

import uuid

import psycopg
import pytest
from test_plan_dispatch import RULES, SETTINGS, D, facts_row, load_facts

from lifecycle.planning.outbox import plan_day
from lifecycle.warehouse.migrations import migrate

# Regular visitor, not in activation (visited), no add-on or cross-sell bought.
REGULAR = dict(visits_since_purchase=20, visits_last_30d=4, visits_last_90d=12, visits_total=40)
# Lapsed: the membership ran to its end, no new one.
LAPSED = dict(
    has_active_membership=False,
    days_since_purchase=500,
    membership_status="expired",
)

A, S, X, R = ("activation", 1), ("stimulation", 1), ("cross_sell", 1), ("retention", 1)
R1, R2, R3 = ("return", 1), ("return", 2), ("return", 3)
R4, R5, R6 = ("return", 4), ("return", 5), ("return", 6)  # step 3 repeated every 30 days

CASES: list[tuple[str, dict, set]] = [
    # activation: days 20-30 since purchase, never visited, not cancelled
    ("activation day 19", dict(days_since_purchase=19), set()),
    ("activation day 20", dict(days_since_purchase=20), {A}),
    ("activation day 30", dict(days_since_purchase=30), {A}),
    ("activation day 31", dict(days_since_purchase=31), set()),
    ("activation 1 visit", dict(days_since_purchase=25, visits_since_purchase=1), set()),
    ("activation cancelled", dict(days_since_purchase=25, membership_status="cancelled"), set()),
    # stimulation: days 60-90, >= 4 visits in 30 days, no add-on since purchase
    ("stimulation day 59", dict(REGULAR, days_since_purchase=59), set()),
    ("stimulation day 60", dict(REGULAR, days_since_purchase=60), {S}),
    ("stimulation day 90", dict(REGULAR, days_since_purchase=90), {S}),
    ("stimulation day 91 = cross_sell", dict(REGULAR, days_since_purchase=91), {X}),
    ("stimulation 3 visits", dict(REGULAR, days_since_purchase=75, visits_last_30d=3), set()),
    ("stimulation 4 visits", dict(REGULAR, days_since_purchase=75, visits_last_30d=4), {S}),
    (
        "stimulation add-on bought",
        dict(REGULAR, days_since_purchase=75, addon_purchases_since_purchase=1),
        set(),
    ),
    # stimulation and cross-sell need a running membership
    (
        "stimulation expired",
        dict(REGULAR, days_since_purchase=75, days_until_end=-5, membership_status="expired"),
        set(),
    ),
    (
        "stimulation cancelled",
        dict(REGULAR, days_since_purchase=75, membership_status="cancelled"),
        set(),
    ),
    (
        "cross_sell expired",
        dict(REGULAR, days_since_purchase=400, days_until_end=-35, membership_status="expired"),
        set(),
    ),
    (
        "cross_sell cancelled",
        dict(REGULAR, days_since_purchase=120, membership_status="cancelled"),
        set(),
    ),
    (
        "cross_sell frozen",
        dict(REGULAR, days_since_purchase=120, membership_status="frozen"),
        set(),
    ),
    # cross_sell: after day 90, regular, no cross-sell in 90 days, not in the retention window
    ("cross_sell day 90 = stimulation", dict(REGULAR, days_since_purchase=90), {S}),
    ("cross_sell day 91", dict(REGULAR, days_since_purchase=91), {X}),
    ("cross_sell 3 visits", dict(REGULAR, days_since_purchase=120, visits_last_30d=3), set()),
    (
        "cross_sell bought one",
        dict(REGULAR, days_since_purchase=120, cross_sell_purchases_last_90d=1),
        set(),
    ),
    # not in the last 14 days of a membership
    ("cross_sell ends in 13", dict(REGULAR, days_since_purchase=300, days_until_end=13), set()),
    ("cross_sell ends in 0", dict(REGULAR, days_since_purchase=300, days_until_end=0), set()),
    (
        "cross_sell ends in 14 = retention",
        dict(REGULAR, days_since_purchase=300, days_until_end=14),
        {R},
    ),
    (
        "cross_sell ends in 30 = retention",
        dict(REGULAR, days_since_purchase=300, days_until_end=30),
        {R},
    ),
    (
        "cross_sell ends in 45 = retention",
        dict(REGULAR, days_since_purchase=300, days_until_end=45),
        {R},
    ),
    ("cross_sell ends in 46", dict(REGULAR, days_since_purchase=300, days_until_end=46), {X}),
    # retention: 14-45 days before the end, no renewal, not cancelled
    ("retention 13", dict(days_until_end=13), set()),
    ("retention 14", dict(days_until_end=14), {R}),
    ("retention 45", dict(days_until_end=45), {R}),
    ("retention 46", dict(days_until_end=46), set()),
    ("retention renewed", dict(days_until_end=30, has_renewal=True), set()),
    ("retention cancelled", dict(days_until_end=30, membership_status="cancelled"), set()),
    # activation and retention at once (a short membership): both selected
    ("activation + retention", dict(days_since_purchase=25, days_until_end=30), {A, R}),
    # return: 30/60/90 days after the end, then every 30 days up to step 6, no renewal,
    # no active membership, the last membership ran to its end
    ("return 29", dict(LAPSED, days_since_end=29, days_until_end=-29), set()),
    ("return 30", dict(LAPSED, days_since_end=30, days_until_end=-30), {R1}),
    ("return 59", dict(LAPSED, days_since_end=59, days_until_end=-59), {R1}),
    ("return 60", dict(LAPSED, days_since_end=60, days_until_end=-60), {R2}),
    ("return 89", dict(LAPSED, days_since_end=89, days_until_end=-89), {R2}),
    ("return 90", dict(LAPSED, days_since_end=90, days_until_end=-90), {R3}),
    ("return 119", dict(LAPSED, days_since_end=119, days_until_end=-119), {R3}),
    ("return 120 = step 3 again", dict(LAPSED, days_since_end=120, days_until_end=-120), {R4}),
    ("return 150", dict(LAPSED, days_since_end=150, days_until_end=-150), {R5}),
    ("return 179", dict(LAPSED, days_since_end=179, days_until_end=-179), {R5}),
    ("return 209", dict(LAPSED, days_since_end=209, days_until_end=-209), {R6}),
    ("return 210: max_steps", dict(LAPSED, days_since_end=210, days_until_end=-210), set()),
    (
        "return after a cancelled membership",
        dict(LAPSED, days_since_end=45, days_until_end=-45, membership_status="cancelled"),
        set(),
    ),
    (
        "return renewed",
        dict(LAPSED, days_since_end=45, days_until_end=-45, has_renewal=True),
        set(),
    ),
    (
        "return active again",
        dict(LAPSED, days_since_end=45, days_until_end=-45, has_active_membership=True),
        set(),
    ),
    # the baseline customer (day 200, 165 days left, no visits) is in no phase
    ("baseline", {}, set()),
]


@pytest.fixture(scope="module")
def planned_db(server_url):
    """A migrated database of this module (the cases share one planning run)."""
    name = "t_sel_" + uuid.uuid4().hex[:10]
    admin = server_url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    url = server_url.rsplit("/", 1)[0] + "/" + name
    migrate(url)
    yield url
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')


@pytest.fixture(scope="module")
def selected(planned_db):
    """Plan D once over all cases; (customer, phase, step) of every message and skip row."""
    rows = [facts_row(f"E{i:03d}", **kw) for i, (_, kw, _) in enumerate(CASES)]
    load_facts(planned_db, rows)
    report = plan_day(planned_db, RULES, D, SETTINGS)
    with psycopg.connect(planned_db) as conn:
        found = conn.execute(
            "select customer_id, phase, step from ops.outbox where plan_date = %(d)s "
            "union all "
            "select customer_id, phase, step from ops.skips where plan_date = %(d)s",
            {"d": D},
        ).fetchall()
    out: dict[str, set] = {}
    for cid, phase, step in found:
        out.setdefault(cid, set()).add((phase, step))
    return out, report


@pytest.mark.parametrize(
    ("index", "label", "expected"),
    [(i, label, expected) for i, (label, _, expected) in enumerate(CASES)],
    ids=[label for label, _, _ in CASES],
)
def test_phase_selects_exactly_its_customers(selected, index, label, expected):
    found, _ = selected
    assert found.get(f"E{index:03d}", set()) == expected, label


def test_every_selection_is_accounted_for_once(selected):
    found, report = selected
    assert sum(report.eligible.values()) == sum(len(v) for v in found.values())
    assert report.inserted_messages + report.inserted_skips == sum(report.eligible.values())
