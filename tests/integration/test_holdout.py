"""The holdout is comparable by construction, and every exposure is counted from the first build.

A club where half of the customers entering activation cannot be reached (no phone, no email)
and messages do nothing: reachable customers come in 40% of the time, unreachable ones 10%,
whether messaged or not. A month is planned through the real planner (plan_day), and only then
is phase_conversions built with the real dbt, over a table built empty before the month.
"""

from __future__ import annotations

import random
from datetime import date, datetime, time, timedelta

import psycopg
import pytest
from test_plan_dispatch import SETTINGS, facts_row, load_facts, rules_with

from lifecycle.insight.uplift import EFFECT, NO_EFFECT, compare
from lifecycle.planning.outbox import plan_day
from lifecycle.rules.assignment import in_control_group
from lifecycle.transform.dbt import run_dbt

pytestmark = pytest.mark.slow

START = date(2026, 5, 1)
DAYS = 30
CUSTOMERS = 2_000
# half of the club in the control group: arms large enough to tell 10 points apart
RULES = rules_with(("control_group: {percent: 10,", "control_group: {percent: 50,"))
CG = RULES.policy.control_group
QUIET = ["--exclude", "resource_type:unit_test", "resource_type:test"]
ARGS = ["build", "--select", "+phase_conversions", *QUIET]


def _club(url: str) -> list[dict]:
    """Customers buying a membership over 35 days; who reaches us and who comes in is drawn
    once, independent of the control group and of any message."""
    rng = random.Random(18)
    club = []
    for i in range(CUSTOMERS):
        cid = f"K{i:05d}"
        purchased = START - timedelta(days=25) + timedelta(days=i % 35)
        reachable = rng.random() < 0.5
        visits = rng.random() < (0.40 if reachable else 0.10)
        club.append(
            {
                "id": cid,
                "purchased": purchased,
                "reachable": reachable,
                # the first visit on day 31-33 of the membership: after activation's days
                # 20-30 (never visited), inside its conversion window
                "visit": purchased + timedelta(days=31 + i % 3) if visits else None,
            }
        )
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        cur.executemany(
            "insert into raw.customers (customer_id, created_at) values (%s, %s)",
            [(c["id"], datetime.combine(c["purchased"], time(9))) for c in club],
        )
        cur.executemany(
            "insert into raw.memberships (membership_id, customer_id, product, "
            "purchased_on, starts_on, ends_on, price, status) "
            "values (%s, %s, 'year', %s, %s, %s, 100, 'active')",
            [("M" + c["id"], c["id"], c["purchased"], c["purchased"],
              c["purchased"] + timedelta(days=365)) for c in club],
        )
        cur.executemany(
            "insert into raw.visits (visit_id, customer_id, visited_at) values (%s, %s, %s)",
            [("V" + c["id"], c["id"], datetime.combine(c["visit"], time(9)))
             for c in club if c["visit"]],
        )
    return club


def _facts(club: list[dict], day: date) -> list[dict]:
    rows = []
    for c in club:
        since = (day - c["purchased"]).days
        visited = c["visit"] is not None and c["visit"] < day
        contact = {} if c["reachable"] else dict(
            phone=None, phone_valid=False, sms_contactable=False, sms_consent=False,
            email=None, email_valid=False, email_contactable=False, email_consent=False,
        )
        rows.append(
            facts_row(
                c["id"],
                membership_id="M" + c["id"],
                purchased_on=c["purchased"],
                days_since_purchase=since,
                days_until_end=365 - since,
                ends_on=c["purchased"] + timedelta(days=365),
                visits_total=int(visited),
                visits_since_purchase=int(visited),
                **contact,
            )
        )
    return rows


def test_a_month_planned_then_built_counts_every_exposure_and_a_null_effect_stays_null(
    fresh_db: str, tmp_path
) -> None:
    club = _club(fresh_db)
    reachable = {c["id"] for c in club if c["reachable"]}
    # phase_conversions built before anything is planned: an empty table
    run_dbt(fresh_db, ARGS, as_of=START - timedelta(days=1), target_path=tmp_path)
    for i in range(DAYS):
        day = START + timedelta(days=i)
        load_facts(fresh_db, _facts(club, day), as_of=day)
        plan_day(fresh_db, RULES, day, SETTINGS)
    last = START + timedelta(days=DAYS - 1)

    # the first build after the month: every exposure of the month is there
    run_dbt(fresh_db, ARGS, as_of=last, target_path=tmp_path)
    with psycopg.connect(fresh_db) as conn:
        planned = set(conn.execute(
            "select customer_id, phase, step, min(plan_date) from ops.outbox group by 1, 2, 3"
        ).fetchall())
        held = set(conn.execute(
            "select customer_id, phase, step, min(plan_date) from ops.skips "
            "where reason = 'control_group' and channel is not null group by 1, 2, 3"
        ).fetchall())
        built = conn.execute(
            "select arm, customer_id, phase, step, exposed_on, channel, variant "
            "from analytics.phase_conversions"
        ).fetchall()
    treated = {(c, p, s, d) for arm, c, p, s, d, *_ in built if arm == "treated"}
    control = {(c, p, s, d) for arm, c, p, s, d, *_ in built if arm == "control"}
    assert len(planned) > 300 and len(held) > 300
    assert min(d for *_, d in planned) == START
    assert treated == planned and control == held
    assert len(built) == len(planned) + len(held)
    assert all(ch == "sms" and v for arm, *_, ch, v in built)  # control rows carry them too

    # three weeks on, every window has closed: the comparison per phase
    run_dbt(fresh_db, ARGS, as_of=last + timedelta(days=21), target_path=tmp_path)
    with psycopg.connect(fresh_db) as conn:
        rows = conn.execute(
            "select arm, customer_id, converted, is_window_closed "
            "from analytics.phase_conversions where phase = 'activation'"
        ).fetchall()
        eligible_control = {
            c for (c,) in conn.execute(
                "select distinct customer_id from ops.skips where phase = 'activation'"
            )
            if in_control_group(c, CG.percent, CG.salt)
        }
    assert rows and all(closed for *_, closed in rows)
    arms = {
        arm: [(c, conv) for a, c, conv, _ in rows if a == arm] for arm in ("treated", "control")
    }
    # the arms are alike: every customer in either had a contact to be messaged on
    assert {c for c, _ in arms["treated"] + arms["control"]} <= reachable
    now = compare(
        len(arms["treated"]), sum(conv for _, conv in arms["treated"]),
        len(arms["control"]), sum(conv for _, conv in arms["control"]),
    )
    print("holdout after arbitration:", now)
    assert now.verdict == NO_EFFECT and now.low < 0 < now.high, now

    # the old holdout: control = every eligible control-group customer, reachable or not
    # (held back before the other rules), against the messages actually sent
    converted = {c["id"] for c in club if c["visit"]}
    old = compare(
        len(arms["treated"]), sum(conv for _, conv in arms["treated"]),
        len(eligible_control), len(eligible_control & converted),
    )
    print("holdout before arbitration:", old)
    assert len(eligible_control - reachable) > 200
    assert old.verdict == EFFECT and old.low > 0.05, old
