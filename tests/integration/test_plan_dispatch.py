"""Planning and sandbox dispatch on a hand-built customer_facts (no dbt: the rules' side only)."""

from __future__ import annotations

from datetime import date, timedelta

import psycopg
import pytest

from lifecycle.dispatch import dispatch
from lifecycle.facts import FACT_COLUMNS
from lifecycle.pipeline import logical_now, outbox_rows
from lifecycle.planning import PlanningError, plan_day
from lifecycle.rules import in_control_group, load_rules
from lifecycle.settings import Settings
from lifecycle.transports.sandbox import SandboxTransport

D = date(2026, 6, 15)
SQL_TYPES = {
    "text": "text",
    "integer": "integer",
    "boolean": "boolean",
    "date": "date",
    "numeric": "numeric(14,2)",
}
SETTINGS = Settings()
RULES = load_rules(SETTINGS.rules_path)
CG = RULES.policy.control_group


def _customer_ids(n: int, *, control: bool) -> list[str]:
    out, i = [], 0
    while len(out) < n:
        cid = f"C{i:05d}"
        if in_control_group(cid, CG.percent, CG.salt) == control:
            out.append(cid)
        i += 1
    return out


def _facts(cid: str, **kw) -> dict:
    row = {k: None for k in FACT_COLUMNS}
    row.update(
        customer_id=cid,
        club_id="main",
        first_name="Olena",
        email=f"{cid.lower()}@example.com",
        phone="+380671234567",
        email_valid=True,
        phone_valid=True,
        sms_consent=True,
        email_consent=True,
        sms_contactable=True,
        email_contactable=True,
        timezone="Europe/Kyiv",
        as_of_date=D,
        membership_id=f"M{cid}",
        membership_status="active",
        has_active_membership=True,
        has_renewal=False,
        visits_total=0,
        visits_since_purchase=0,
        visits_last_7d=0,
        visits_last_30d=0,
        visits_last_90d=0,
        days_since_purchase=200,
        days_until_end=165,
        purchased_on=D - timedelta(days=200),
        ends_on=D + timedelta(days=165),
        addon_purchases_since_purchase=0,
        cross_sell_purchases_since_purchase=0,
        addon_purchases_last_30d=0,
        cross_sell_purchases_last_90d=0,
    )
    row.update(kw)
    return row


def _load_facts(url: str, rows: list[dict], as_of: date = D) -> None:
    cols = ", ".join(f"{k} {SQL_TYPES[t]}" for k, t in FACT_COLUMNS.items())
    with psycopg.connect(url) as conn:
        conn.execute("create schema if not exists analytics")
        conn.execute("drop table if exists analytics.customer_facts")
        conn.execute(f"create table analytics.customer_facts ({cols})")
        names = list(FACT_COLUMNS)
        with conn.cursor().copy(
            f"copy analytics.customer_facts ({', '.join(names)}) from stdin"
        ) as cp:
            for r in rows:
                r = {**r, "as_of_date": as_of}
                cp.write_row([r[k] for k in names])


@pytest.fixture
def club(fresh_db):
    a, b, c, d, e, f = _customer_ids(6, control=False)
    (ctl,) = _customer_ids(1, control=True)
    rows = [
        # activation (day 25, never visited) and retention at once: activation wins (priority 1)
        _facts(a, days_since_purchase=25, days_until_end=30),
        # retention only; SMS preferred
        _facts(b, days_until_end=20),
        # retention, but no valid phone: email instead
        _facts(c, days_until_end=20, phone="12345", phone_valid=False, sms_contactable=False),
        # activation, phone valid but no SMS consent and no email at all: no_consent
        _facts(
            d,
            days_since_purchase=22,
            sms_consent=False,
            sms_contactable=False,
            email=None,
            email_valid=False,
            email_contactable=False,
        ),
        # return step 2 (lapsed 70 days)
        _facts(
            e,
            has_active_membership=False,
            days_since_end=70,
            days_until_end=-70,
            membership_status="active",
        ),
        # not in any phase
        _facts(f),
        # control group: eligible for activation, never messaged
        _facts(ctl, days_since_purchase=21),
    ]
    _load_facts(fresh_db, rows)
    return fresh_db, dict(a=a, b=b, c=c, d=d, e=e, f=f, ctl=ctl)


def _by_customer(url: str, day: date = D) -> dict:
    out: dict = {}
    for r in outbox_rows(url, day):
        out.setdefault(r["customer_id"], []).append(r)
    return out


def test_plan_arbitrates_and_explains_every_skip(club):
    url, ids = club
    report = plan_day(url, RULES, D, SETTINGS)
    rows = _by_customer(url)
    msg = {cid: [r for r in rs if r["status"] != "skipped"] for cid, rs in rows.items()}
    skip = {
        cid: {(r["phase"], r["reason"]) for r in rs if r["status"] == "skipped"}
        for cid, rs in rows.items()
    }
    assert [(m["phase"], m["channel"]) for m in msg[ids["a"]]] == [("activation", "sms")]
    assert skip[ids["a"]] == {("retention", "lower_priority")}
    assert [(m["phase"], m["channel"]) for m in msg[ids["b"]]] == [("retention", "sms")]
    assert [(m["phase"], m["channel"]) for m in msg[ids["c"]]] == [("retention", "email")]
    assert msg[ids["d"]] == [] and skip[ids["d"]] == {("activation", "no_consent")}
    assert [(m["phase"], m["step"]) for m in msg[ids["e"]]] == [("return", 2)]
    assert ids["f"] not in rows
    assert msg[ids["ctl"]] == [] and skip[ids["ctl"]] == {("activation", "control_group")}
    assert report.inserted_messages == 4
    # send_at is 10:00 in Kyiv (UTC+3 in June)
    assert {m["send_at"] for ms in msg.values() for m in ms} == {"2026-06-15T07:00:00+00:00"}


def test_planning_twice_changes_nothing(club):
    url, _ = club
    plan_day(url, RULES, D, SETTINGS)
    before = outbox_rows(url, D)
    again = plan_day(url, RULES, D, SETTINGS)
    assert again.inserted_messages == 0 and again.inserted_skips == 0
    assert outbox_rows(url, D) == before


def test_dispatch_sends_each_message_once_even_when_run_twice(club):
    url, _ = club
    plan_day(url, RULES, D, SETTINGS)
    first = dispatch(url, SandboxTransport(url), now=logical_now(D), plan_date=D, settings=SETTINGS)
    second = dispatch(
        url, SandboxTransport(url), now=logical_now(D), plan_date=D, settings=SETTINGS
    )
    assert first.outcomes == {"sent": 4} and second.claimed == 0
    with psycopg.connect(url) as conn:
        recorded = conn.execute(
            "select o.customer_id, o.phase, s.to_address from ops.sandbox_messages s "
            "join ops.outbox o using (outbox_id)"
        ).fetchall()
        statuses = conn.execute("select status, count(*) from ops.outbox group by 1").fetchall()
    assert len(recorded) == 4 and len({(c, p) for c, p, _ in recorded}) == 4
    assert statuses == [("sent", 4)]


def test_a_step_already_sent_for_this_membership_is_not_sent_again(club):
    url, ids = club
    plan_day(url, RULES, D, SETTINGS)
    dispatch(url, SandboxTransport(url), now=logical_now(D), plan_date=D, settings=SETTINGS)
    # Next day: b is still in the retention window with the same membership.
    nxt = D + timedelta(days=1)
    _load_facts(url, [_facts(ids["b"], days_until_end=19)], as_of=nxt)
    plan_day(url, RULES, nxt, SETTINGS)
    rows = outbox_rows(url, nxt)
    assert [(r["phase"], r["status"], r.get("reason")) for r in rows] == [
        ("retention", "skipped", "already_sent")
    ]
    # A renewal (a new membership cycle) may be reminded again.
    _load_facts(
        url,
        [_facts(ids["b"], days_until_end=19, membership_id="M-new")],
        as_of=nxt + timedelta(days=1),
    )
    plan_day(url, RULES, nxt + timedelta(days=1), SETTINGS)
    assert [r["status"] for r in outbox_rows(url, nxt + timedelta(days=1))] == ["planned"]


def test_frequency_cap_holds_across_days(club):
    url, ids = club
    cid = ids["b"]
    for i, phase_kw in enumerate(
        [
            dict(days_until_end=20),  # retention
            dict(days_until_end=100, days_since_purchase=25, membership_id="M2"),  # activation
            dict(days_until_end=100, days_since_purchase=65, visits_last_30d=5, membership_id="M3"),
        ]
    ):
        day = D + timedelta(days=i)
        _load_facts(url, [_facts(cid, **phase_kw)], as_of=day)
        plan_day(url, RULES, day, SETTINGS)
    statuses = [
        r["status"] if r["status"] != "skipped" else r["reason"]
        for i in range(3)
        for r in outbox_rows(url, D + timedelta(days=i))
    ]
    assert statuses == ["planned", "planned", "capped"]  # 2 per 7 days


def test_planning_refuses_facts_built_for_another_day(club):
    url, _ = club
    with pytest.raises(PlanningError, match="built as of 2026-06-15, not 2026-06-16"):
        plan_day(url, RULES, D + timedelta(days=1), SETTINGS)
