"""Planning and sandbox dispatch on a hand-built customer_facts (no dbt: the rules' side only)."""

from __future__ import annotations

import zlib
from datetime import date, timedelta

import psycopg
import pytest

from lifecycle.delivery.dispatch import dispatch
from lifecycle.delivery.transports.sandbox import SandboxTransport
from lifecycle.pipeline import logical_now, outbox_rows
from lifecycle.planning.outbox import allow_volume, plan_day
from lifecycle.planning.plan import PlanningError, VolumeGuardTripped
from lifecycle.rules.assignment import assign_variant, in_control_group
from lifecycle.rules.loading import load_rules, parse_rules
from lifecycle.settings import Settings
from lifecycle.warehouse.facts import FACT_COLUMNS

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
TEXT = SETTINGS.rules_path.read_text()


def rules_with(*replacements: tuple[str, str]):
    """The default rules with some text replaced (each old text must occur)."""
    text = TEXT
    for old, new in replacements:
        assert old in text, old
        text = text.replace(old, new, 1)
    return parse_rules(text, "test-rules.yml")


def customer_ids(n: int, *, control: bool) -> list[str]:
    out, i = [], 0
    while len(out) < n:
        cid = f"C{i:05d}"
        if in_control_group(cid, CG.percent, CG.salt) == control:
            out.append(cid)
        i += 1
    return out


def phone_of(cid: str) -> str:
    """A phone number of the customer's own (records sharing one get one message a day)."""
    return f"+380{zlib.crc32(cid.encode()):09d}"[:13]


def facts_row(cid: str, **kw) -> dict:
    row = {k: None for k in FACT_COLUMNS}
    row.update(
        customer_id=cid,
        club_id="main",
        first_name="Olena",
        email=f"{cid.lower()}@example.com",
        phone=phone_of(cid),
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


def load_facts(url: str, rows: list[dict], as_of: date = D) -> None:
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
    a, b, c, d, e, f = customer_ids(6, control=False)
    (ctl,) = customer_ids(1, control=True)
    rows = [
        # activation (day 25, never visited) and retention at once: activation wins (priority 1)
        facts_row(a, days_since_purchase=25, days_until_end=30),
        # retention only; SMS preferred
        facts_row(b, days_until_end=20),
        # retention, but no valid phone: email instead
        facts_row(c, days_until_end=20, phone="12345", phone_valid=False, sms_contactable=False),
        # activation, phone valid but no SMS consent and no email at all: no_consent
        facts_row(
            d,
            days_since_purchase=22,
            sms_consent=False,
            sms_contactable=False,
            email=None,
            email_valid=False,
            email_contactable=False,
        ),
        # return step 2 (lapsed 70 days)
        facts_row(
            e,
            has_active_membership=False,
            days_since_end=70,
            days_until_end=-70,
            membership_status="expired",
        ),
        # not in any phase
        facts_row(f),
        # control group: eligible for activation, never messaged
        facts_row(ctl, days_since_purchase=21),
    ]
    load_facts(fresh_db, rows)
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
    load_facts(url, [facts_row(ids["b"], days_until_end=19)], as_of=nxt)
    plan_day(url, RULES, nxt, SETTINGS)
    rows = outbox_rows(url, nxt)
    assert [(r["phase"], r["status"], r.get("reason")) for r in rows] == [
        ("retention", "skipped", "already_sent")
    ]
    # A renewal (a new membership cycle) may be reminded again.
    load_facts(
        url,
        [facts_row(ids["b"], days_until_end=19, membership_id="M-new")],
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
        load_facts(url, [facts_row(cid, **phase_kw)], as_of=day)
        plan_day(url, RULES, day, SETTINGS)
    statuses = [
        r["status"] if r["status"] != "skipped" else r["reason"]
        for i in range(3)
        for r in outbox_rows(url, D + timedelta(days=i))
    ]
    assert statuses == ["planned", "planned", "capped"]  # 2 per 7 days


def _skip_rows(url: str, day: date = D) -> dict[str, list[tuple]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "select customer_id, phase, step, reason, channel, variant, message_key "
            "from ops.skips where plan_date = %s order by customer_id, phase, step",
            (day,),
        ).fetchall()
    out: dict[str, list[tuple]] = {}
    for cid, *rest in rows:
        out.setdefault(cid, []).append(tuple(rest))
    return out


def test_control_customers_go_through_every_rule_before_they_are_held_back(fresh_db):
    ctl = customer_ids(6, control=True)
    (treated,) = customer_ids(1, control=False)
    shared = phone_of(ctl[5])
    rows = [
        # would have got activation by SMS: held back, with what it would have received
        facts_row(ctl[0], days_since_purchase=25, days_until_end=30),
        # no valid contact at all, no consent on SMS and no email: the rule's own reasons
        facts_row(ctl[1], days_since_purchase=22, phone=None, phone_valid=False,
                  sms_contactable=False, email=None, email_valid=False,
                  email_contactable=False),
        facts_row(ctl[2], days_since_purchase=22, sms_consent=False, sms_contactable=False,
                  email=None, email_valid=False, email_contactable=False),
        # no SMS consent: would have gone by email
        facts_row(ctl[3], days_until_end=20, sms_consent=False, sms_contactable=False),
        # opted out of SMS and email
        facts_row(ctl[4], days_until_end=20),
        # activation (priority 1) by SMS on a phone a treated customer's retention shares:
        # the address is taken for the day by the control would-have, as by a message
        facts_row(ctl[5], days_since_purchase=25),
        facts_row(treated, days_until_end=20, phone=shared, email=None, email_valid=False,
                  email_contactable=False),
    ]
    load_facts(fresh_db, rows)
    with psycopg.connect(fresh_db) as conn:
        conn.execute(
            "insert into ops.suppressions (customer_id, channel, reason, source) "
            "values (%s, 'sms', 'opted_out', 'test'), (%s, 'email', 'opted_out', 'test')",
            (ctl[4], ctl[4]),
        )
    report = plan_day(fresh_db, RULES, D, SETTINGS)
    skips = _skip_rows(fresh_db)
    assert _outbox(fresh_db) == []
    step = RULES.phase("activation").steps[0]
    variant = assign_variant(ctl[0], "activation", 1, step.variants, RULES.policy.variant_salt)
    (held, lower) = skips[ctl[0]]
    assert held[:5] == ("activation", 1, "control_group", "sms", variant.name)
    assert len(held[5]) == 32  # the message key, as the outbox row would have had it
    assert lower == ("retention", 1, "lower_priority", None, None, None)
    assert skips[ctl[1]] == [("activation", 1, "no_contact", None, None, None)]
    assert skips[ctl[2]] == [("activation", 1, "no_consent", None, None, None)]
    assert [s[:4] for s in skips[ctl[3]]] == [("retention", 1, "control_group", "email")]
    assert skips[ctl[4]] == [("retention", 1, "opted_out", None, None, None)]
    assert [s[:4] for s in skips[ctl[5]]] == [("activation", 1, "control_group", "sms")]
    assert skips[treated] == [("retention", 1, "shared_contact", None, None, None)]
    assert dict(report.control) == {("activation", "sms"): 2, ("retention", "email"): 1}
    # the outbox listing shows the channel it would have gone on
    listed = {r["customer_id"]: r for r in outbox_rows(fresh_db, D) if r["phase"] != "retention"}
    assert (listed[ctl[0]]["channel"], listed[ctl[0]]["variant"]) == ("sms", variant.name)
    # planned again: nothing new, and the control would-have still holds the shared phone
    again = plan_day(fresh_db, RULES, D, SETTINGS)
    assert again.inserted_messages == 0 and again.inserted_skips == 0
    assert _outbox(fresh_db) == []


def test_a_control_would_have_counts_as_sent_for_keys_and_caps(fresh_db):
    (ctl,) = customer_ids(1, control=True)
    # day 1 retention, day 2 activation of another membership, day 3 stimulation: the
    # would-haves of days 1 and 2 fill the 2-per-7-days cap, as two messages would
    days = [
        dict(days_until_end=20),
        dict(days_until_end=100, days_since_purchase=25, membership_id="M2"),
        dict(days_until_end=100, days_since_purchase=65, visits_last_30d=5, membership_id="M3"),
    ]
    for i, kw in enumerate(days):
        day = D + timedelta(days=i)
        load_facts(fresh_db, [facts_row(ctl, **kw)], as_of=day)
        plan_day(fresh_db, RULES, day, SETTINGS)
    reasons = [[s[2] for s in _skip_rows(fresh_db, D + timedelta(days=i))[ctl]] for i in range(3)]
    assert reasons == [["control_group"], ["control_group"], ["capped"]]
    # the step of day 1 is taken for the membership: not "exposed" again on a later day
    later = D + timedelta(days=10)
    load_facts(fresh_db, [facts_row(ctl, days_until_end=19)], as_of=later)
    plan_day(fresh_db, RULES, later, SETTINGS)
    assert [s[2] for s in _skip_rows(fresh_db, later)[ctl]] == ["already_sent"]
    # a new membership cycle may be exposed again
    renewed = later + timedelta(days=1)
    load_facts(fresh_db, [facts_row(ctl, days_until_end=19, membership_id="M-new")],
               as_of=renewed)
    plan_day(fresh_db, RULES, renewed, SETTINGS)
    assert [s[2] for s in _skip_rows(fresh_db, renewed)[ctl]] == ["control_group"]


def test_control_rows_from_before_the_holdout_recorded_a_channel_are_no_history(fresh_db):
    # a control_group skip written before ops.skips had a channel says nothing of a message:
    # it takes no key and fills no cap
    (ctl,) = customer_ids(1, control=True)
    with psycopg.connect(fresh_db) as conn:
        for i in (1, 2):
            conn.execute(
                "insert into ops.skips (plan_date, customer_id, phase, step, reason) "
                "values (%s, %s, 'retention', 1, 'control_group')",
                (D - timedelta(days=i), ctl),
            )
    load_facts(fresh_db, [facts_row(ctl, days_until_end=20)])
    plan_day(fresh_db, RULES, D, SETTINGS)
    assert [s[2:4] for s in _skip_rows(fresh_db)[ctl]] == [("control_group", "sms")]


def test_planning_refuses_facts_built_for_another_day(club):
    url, _ = club
    with pytest.raises(PlanningError, match="built as of 2026-06-15, not 2026-06-16"):
        plan_day(url, RULES, D + timedelta(days=1), SETTINGS)


def _outbox(url: str, day: date = D) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "select customer_id, phase, step, channel, variant, body from ops.outbox "
            "where plan_date = %s order by customer_id",
            (day,),
        ).fetchall()


def _skips(url: str, day: date = D) -> dict[str, set]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "select customer_id, phase, reason from ops.skips where plan_date = %s", (day,)
        ).fetchall()
    out: dict[str, set] = {}
    for cid, phase, reason in rows:
        out.setdefault(cid, set()).add((phase, reason))
    return out


def test_suppressions_block_their_channel_with_their_reason(fresh_db):
    ids = customer_ids(6, control=False)
    # all in retention (sms preferred, then email)
    load_facts(fresh_db, [facts_row(c, days_until_end=20) for c in ids])
    suppressions = [
        (ids[0], "sms", "opted_out"),  # sms blocked: email instead
        (ids[1], "sms", "hard_bounce"),
        (ids[1], "email", "spam_complaint"),  # both blocked: the preferred channel's reason
        (ids[2], "sms", "manual"),
        (ids[2], "email", "manual"),
        (ids[3], "email", "opted_out"),  # email blocked, sms still fine
        (ids[4], "sms", "spam_complaint"),
    ]
    with psycopg.connect(fresh_db) as conn:
        conn.cursor().executemany(
            "insert into ops.suppressions (customer_id, channel, reason, source) "
            "values (%s, %s, %s, 'test')",
            suppressions,
        )
    # ids[4] has no email at all: only the suppressed sms was possible
    with psycopg.connect(fresh_db) as conn:
        conn.execute(
            "update analytics.customer_facts set email = null, email_valid = false, "
            "email_contactable = false where customer_id = %s",
            (ids[4],),
        )
    report = plan_day(fresh_db, RULES, D, SETTINGS)
    sent = {r[0]: r[3] for r in _outbox(fresh_db)}
    assert sent == {ids[0]: "email", ids[3]: "sms", ids[5]: "sms"}
    assert _skips(fresh_db) == {
        ids[1]: {("retention", "hard_bounce")},
        ids[2]: {("retention", "suppressed")},
        ids[4]: {("retention", "spam_complaint")},
    }
    assert report.skipped == {"hard_bounce": 1, "suppressed": 1, "spam_complaint": 1}


def test_ab_variants_are_recorded_stable_and_near_their_weights(fresh_db):
    ids = customer_ids(300, control=False)
    load_facts(fresh_db, [facts_row(c, days_until_end=20) for c in ids])
    report = plan_day(fresh_db, RULES, D, SETTINGS)
    rows = _outbox(fresh_db)
    assert len(rows) == 300
    step = RULES.phase("retention").steps[0]
    salt = RULES.policy.variant_salt
    for cid, phase, step_no, _, variant, body in rows:
        assert variant == assign_variant(cid, phase, step_no, step.variants, salt).name
        # variant B carries its own offer into the text
        assert ("-15%" in body) == (variant == "B"), body
    counts = {v: sum(1 for r in rows if r[4] == v) for v in ("A", "B")}
    assert 120 <= counts["A"] <= 180 and counts["A"] + counts["B"] == 300  # 50/50, ~3.5 sd
    assert report.variants[("retention", 1, "A")] == counts["A"]
    # The same customers on another day (facts rebuilt) keep their variants.
    other = D + timedelta(days=1)
    with psycopg.connect(fresh_db) as conn:
        conn.execute("delete from ops.outbox")
    load_facts(fresh_db, [facts_row(c, days_until_end=19) for c in ids], as_of=other)
    plan_day(fresh_db, RULES, other, SETTINGS)
    assert {r[0]: r[4] for r in _outbox(fresh_db, other)} == {r[0]: r[4] for r in rows}


def _fake_history(url: str, volumes: dict[date, int]) -> None:
    """Outbox rows of earlier days (other customers), as the volume guard's history."""
    with psycopg.connect(url) as conn:
        for day, n in volumes.items():
            for i in range(n):
                conn.execute(
                    "insert into ops.outbox (message_key, plan_date, customer_id, phase, step, "
                    "cycle_key, channel, to_address, body, send_at, window_end_at, deadline_at, "
                    "status) values (%s, %s, %s, 'retention', 1, 'm', 'sms', '+380670000000', "
                    "'x', now(), now(), now(), 'sent')",
                    (f"h{day}{i}", day, f"H{day:%m%d}{i}"),
                )


def test_volume_guard_trips_on_the_absolute_cap_and_writes_no_message(fresh_db):
    ids = customer_ids(5, control=False)
    (ctl,) = customer_ids(1, control=True)
    load_facts(fresh_db, [facts_row(c, days_until_end=20) for c in ids + [ctl]])
    rules = rules_with(("max_messages: 5000", "max_messages: 4"))
    with pytest.raises(VolumeGuardTripped, match="5 messages planned, more than .*max_messages"):
        plan_day(fresh_db, rules, D, SETTINGS)
    assert _outbox(fresh_db) == []
    skips = _skips(fresh_db)
    assert {c: skips[c] for c in ids} == {c: {("retention", "volume_guard")} for c in ids}
    # the control customer would have been messaged: its would-have is held by the guard too
    # (nothing went out, so it is no exposure)
    assert skips[ctl] == {("retention", "volume_guard")}
    # Trips again on a rerun (nothing changed), still writing nothing.
    with pytest.raises(VolumeGuardTripped):
        plan_day(fresh_db, rules, D, SETTINGS)
    # An explicit override plans the day; the volume_guard skips give way to messages.
    report = plan_day(fresh_db, rules, D, SETTINGS, allow_volume=True)
    assert report.inserted_messages == 5 and report.volume.tripped
    assert len(_outbox(fresh_db)) == 5
    assert _skips(fresh_db) == {ctl: {("retention", "control_group")}}
    with psycopg.connect(fresh_db) as conn:
        held = conn.execute("select channel, variant from ops.skips").fetchall()
    step = RULES.phase("retention").steps[0]
    variant = assign_variant(ctl, "retention", 1, step.variants, RULES.policy.variant_salt)
    assert held == [("sms", variant.name)]


def test_volume_guard_override_recorded_in_the_warehouse(fresh_db):
    ids = customer_ids(3, control=False)
    load_facts(fresh_db, [facts_row(c, days_until_end=20) for c in ids])
    rules = rules_with(("max_messages: 5000", "max_messages: 2"))
    with pytest.raises(VolumeGuardTripped):
        plan_day(fresh_db, rules, D, SETTINGS)
    allow_volume(fresh_db, D, "spring campaign, agreed with the club")
    assert plan_day(fresh_db, rules, D, SETTINGS).inserted_messages == 3
    # only that date: the next day trips again
    nxt = D + timedelta(days=1)
    load_facts(
        fresh_db, [facts_row(c, days_until_end=20, membership_id="N" + c) for c in ids], as_of=nxt
    )
    with pytest.raises(VolumeGuardTripped):
        plan_day(fresh_db, rules, nxt, SETTINGS)


def test_volume_guard_trips_on_the_ratio_to_the_trailing_median(fresh_db):
    ids = customer_ids(10, control=False)
    load_facts(fresh_db, [facts_row(c, days_until_end=20) for c in ids])
    rules = rules_with(("ratio_floor: 100", "ratio_floor: 0"))
    # two days of history are not enough (min_history_days: 3): no ratio check
    _fake_history(fresh_db, {D - timedelta(days=2): 3, D - timedelta(days=1): 2})
    report = plan_day(fresh_db, rules, D, SETTINGS)
    assert report.inserted_messages == 10 and report.volume.ratio_limit is None
    with psycopg.connect(fresh_db) as conn:
        conn.execute("delete from ops.outbox where plan_date = %s", (D,))
        conn.execute("delete from ops.skips")
    # a third day: median of [3, 2, 3] = 3; 10 > 3 x 3
    _fake_history(fresh_db, {D - timedelta(days=3): 3})
    with pytest.raises(VolumeGuardTripped, match=r"more than 3 x the median .*3 a day, 3 days"):
        plan_day(fresh_db, rules, D, SETTINGS)
    # a day older than median_days does not count
    with psycopg.connect(fresh_db) as conn:
        conn.execute("delete from ops.skips")
    _fake_history(fresh_db, {D - timedelta(days=8): 100})
    with pytest.raises(VolumeGuardTripped):
        plan_day(fresh_db, rules, D, SETTINGS)
    # with the default floor (100), 10 messages never trip the ratio check
    assert plan_day(fresh_db, RULES, D, SETTINGS).inserted_messages == 10


def test_channel_caps_move_a_message_to_the_other_channel(fresh_db):
    a, b = customer_ids(2, control=False)
    rules = rules_with(
        (
            "  frequency_caps:\n    - {days: 7, max: 2}\n    - {days: 30, max: 4}\n",
            "  frequency_caps:\n    - {days: 7, max: 5}\n",
        ),
        ("    sms:\n      - {days: 7, max: 2}", "    sms:\n      - {days: 7, max: 1}"),
    )
    # yesterday each got an sms (activation, another membership)
    yesterday = D - timedelta(days=1)
    load_facts(
        fresh_db,
        [facts_row(c, days_since_purchase=25, membership_id="OLD" + c) for c in (a, b)],
        as_of=yesterday,
    )
    plan_day(fresh_db, rules, yesterday, SETTINGS)
    assert [r[3] for r in _outbox(fresh_db, yesterday)] == ["sms", "sms"]
    # today: retention; a can get email, b has no email
    load_facts(
        fresh_db,
        [
            facts_row(a, days_until_end=20),
            facts_row(b, days_until_end=20, email=None, email_valid=False, email_contactable=False),
        ],
    )
    plan_day(fresh_db, rules, D, SETTINGS)
    assert [(r[0], r[3]) for r in _outbox(fresh_db)] == [(a, "email")]
    assert _skips(fresh_db) == {b: {("retention", "capped")}}


def test_an_sms_over_the_segment_limit_is_never_sent(fresh_db):
    a, b, c = customer_ids(3, control=False)
    long_name = "Олександра-Анастасія-Марія-Вікторія"  # 35 letters, more than the sample's 20
    load_facts(
        fresh_db,
        [
            # activation's sms with this name is 3 UCS-2 segments; phase limit 2
            facts_row(a, days_since_purchase=25, first_name=long_name),
            facts_row(
                b,
                days_since_purchase=25,
                first_name=long_name,
                email=None,
                email_valid=False,
                email_contactable=False,
            ),
            facts_row(c, days_since_purchase=25),
        ],
    )
    plan_day(fresh_db, RULES, D, SETTINGS)
    assert [(r[0], r[3]) for r in _outbox(fresh_db)] == [(a, "email"), (c, "sms")]
    assert _skips(fresh_db) == {b: {("activation", "too_long")}}


def test_a_template_failing_on_a_customer_is_skipped_not_fatal(fresh_db):
    a, b, c = customer_ids(3, control=False)
    # Valid (the sample customer has a name), but fails for a customer without one.
    sms_a = "sms: \"{{ first_name or 'Hi' }}, your membership ends"
    sms_b = 'sms: "{{ first_name.upper() }}, your membership ends'
    rules = rules_with((sms_a, sms_b), (sms_a, sms_b))
    no_email = dict(email=None, email_valid=False, email_contactable=False)
    load_facts(
        fresh_db,
        [
            facts_row(a, days_until_end=20, first_name=None),  # sms fails, email works
            facts_row(b, days_until_end=20, first_name=None, **no_email),
            facts_row(c, days_until_end=20, **no_email),
        ],
    )
    plan_day(fresh_db, rules, D, SETTINGS)
    assert [(r[0], r[3]) for r in _outbox(fresh_db)] == [(a, "email"), (c, "sms")]
    assert _skips(fresh_db) == {b: {("retention", "render_failed")}}
    assert _outbox(fresh_db)[1][5].startswith("OLENA, your membership ends")


def test_bought_service_reads_the_service_purchases_mart(fresh_db):
    ids = customer_ids(5, control=False)
    regular = dict(days_since_purchase=200, visits_last_30d=5)
    load_facts(fresh_db, [facts_row(c, **regular) for c in ids])
    # cross_sell, but not to whoever bought a massage or spa in the last 30 days
    rules = rules_with(
        (
            "- {field: cross_sell_purchases_last_90d, eq: 0}",
            "- not: {bought_service: {service: [massage, spa], within_days: 30}}",
        )
    )
    with psycopg.connect(fresh_db) as conn:
        conn.execute(
            "create table analytics.customer_service_purchases "
            "(customer_id text, service text, as_of_date date, last_purchased_on date)"
        )
        conn.cursor().executemany(
            "insert into analytics.customer_service_purchases values (%s, %s, %s, %s)",
            [
                (ids[0], "massage", D, D - timedelta(days=29)),  # inside the 30 days
                (ids[1], "massage", D, D - timedelta(days=30)),  # one day outside
                (ids[2], "spa", D, D),
                (ids[3], "solarium", D, D),  # another service
            ],
        )
    plan_day(fresh_db, rules, D, SETTINGS)
    assert {r[0] for r in _outbox(fresh_db) if r[1] == "cross_sell"} == {ids[1], ids[3], ids[4]}


def test_repeat_once_per_customer_spans_memberships(fresh_db):
    (cid,) = customer_ids(1, control=False)
    once = rules_with(
        (
            "    enabled: true\n    priority: 2\n",
            "    enabled: true\n    priority: 2\n    repeat: once_per_customer\n",
        )
    )
    load_facts(fresh_db, [facts_row(cid, days_until_end=20)])
    plan_day(fresh_db, once, D, SETTINGS)
    nxt = D + timedelta(days=1)
    load_facts(fresh_db, [facts_row(cid, days_until_end=20, membership_id="M-next")], as_of=nxt)
    plan_day(fresh_db, once, nxt, SETTINGS)
    assert _outbox(fresh_db, nxt) == [] and _skips(fresh_db, nxt) == {
        cid: {("retention", "already_sent")}
    }
    # the default (once per membership) sends again for the new membership
    with psycopg.connect(fresh_db) as conn:
        conn.execute("delete from ops.skips")
    plan_day(fresh_db, RULES, nxt, SETTINGS)
    assert [r[1] for r in _outbox(fresh_db, nxt)] == ["retention"]


def test_phase_caps_count_only_that_phase(fresh_db):
    (cid,) = customer_ids(1, control=False)
    capped = rules_with(
        (
            "    enabled: true\n    priority: 1\n",
            "    enabled: true\n    priority: 1\n    frequency_caps: [{days: 30, max: 1}]\n",
        )
    )
    day0 = D - timedelta(days=10)
    load_facts(fresh_db, [facts_row(cid, days_since_purchase=21, membership_id="M1")], as_of=day0)
    plan_day(fresh_db, capped, day0, SETTINGS)
    # ten days later: activation again (another membership) is capped, retention is not
    load_facts(
        fresh_db,
        [facts_row(cid, days_since_purchase=22, days_until_end=20, membership_id="M2")],
    )
    plan_day(fresh_db, capped, D, SETTINGS)
    assert [r[1] for r in _outbox(fresh_db)] == ["retention"]
    assert _skips(fresh_db) == {cid: {("activation", "capped")}}


def test_cli_volume_allow_records_the_override(fresh_db):
    from click.testing import CliRunner

    from lifecycle.cli import main as cli

    out = CliRunner().invoke(
        cli,
        ["volume", "allow", "--date", D.isoformat(), "--reason", "spring campaign"],
        env={"LIFECYCLE_WAREHOUSE_URL": fresh_db},
    )
    assert out.exit_code == 0, out.output
    with psycopg.connect(fresh_db) as conn:
        assert conn.execute("select plan_date, reason from ops.volume_overrides").fetchall() == [
            (D, "spring campaign")
        ]


def test_a_customer_who_converts_after_planning_is_not_sent(fresh_db):
    """Rows loaded into raw after the plan: the phase's conversion stops the message at the
    hand-over (converted_before_send); a reload of an old row, or another phase's event, does
    not. Through the real SDKs to the stand-in provider."""
    from lifecycle.delivery.standin import StandinServer
    from lifecycle.delivery.transports import get_transport
    from lifecycle.pipeline import day_by_phase

    renews, visits, buys, reloaded, other, plain = customer_ids(6, control=False)
    start = D - timedelta(days=200)
    load_facts(
        fresh_db,
        [
            facts_row(renews, days_until_end=20),  # retention
            facts_row(reloaded, days_until_end=20),  # retention
            facts_row(visits, days_since_purchase=25, days_until_end=300),  # activation
            facts_row(other, days_since_purchase=25, days_until_end=300),  # activation
            facts_row(  # cross-sell
                buys, days_since_purchase=120, days_until_end=100, visits_last_30d=6
            ),
            facts_row(plain, days_until_end=20),  # retention
        ],
    )
    with psycopg.connect(fresh_db) as conn:
        conn.execute("insert into raw.services values ('massage', 'cross_sell'), "
                     "('solarium', 'addon')")
        for cid in (renews, visits, buys, reloaded, other, plain):
            conn.execute(
                "insert into raw.memberships values (%s, %s, 'year', %s, %s, %s, 100, 'active')",
                (f"M{cid}", cid, start, start, D + timedelta(days=20)),
            )
        # an old membership of `reloaded`, loaded before the plan
        conn.execute(
            "insert into raw.memberships values (%s, %s, 'year', %s, %s, %s, 100, 'active')",
            (f"OLD{reloaded}", reloaded, start - timedelta(days=400),
             start - timedelta(days=400), start - timedelta(days=35)),
        )
    report = plan_day(fresh_db, RULES, D, SETTINGS)
    assert sum(report.planned.values()) == 6

    # After the morning's plan: a renewal, a first visit, a massage; an old membership loaded
    # again (every upsert stamps _loaded_at); an add-on, which is not activation's conversion.
    with psycopg.connect(fresh_db) as conn:
        conn.execute(
            "insert into raw.memberships values (%s, %s, 'year', %s, %s, %s, 100, 'active')",
            (f"R{renews}", renews, D, D + timedelta(days=21), D + timedelta(days=386)),
        )
        conn.execute("update raw.memberships set _loaded_at = now() where membership_id = %s",
                     (f"OLD{reloaded}",))
        conn.execute("insert into raw.visits values ('V1', %s, %s)",
                     (visits, logical_now(D)))
        conn.execute("insert into raw.purchases values ('P1', %s, 'massage', %s, 40), "
                     "('P2', %s, 'solarium', %s, 5)",
                     (buys, logical_now(D), other, logical_now(D)))

    with StandinServer() as server:
        settings = Settings(transport="standin", standin_url=server.url)
        transport = get_transport("standin", fresh_db, settings)
        result = dispatch(fresh_db, transport, now=logical_now(D), plan_date=D,
                          settings=settings, throttles={})
        transport.close()
        accepted = {a.outbox_id for a in server.provider.accepted}

    with psycopg.connect(fresh_db) as conn:
        rows = {
            cid: (status, last_error, str(outbox_id))
            for cid, status, last_error, outbox_id in conn.execute(
                "select customer_id, status, last_error, outbox_id from ops.outbox"
            )
        }
    for cid in (renews, visits, buys):
        assert rows[cid][:2] == ("expired", "converted_before_send"), cid
        assert rows[cid][2] not in accepted
    for cid in (reloaded, other, plain):
        assert rows[cid][0] == "sent", cid
        assert rows[cid][2] in accepted
    assert result.outcomes == {"sent": 3, "converted_before_send": 3}
    summary = day_by_phase(fresh_db, D)
    assert summary["retention"]["skipped"] == {"converted_before_send": 1}
    assert summary["activation"]["skipped"] == {"converted_before_send": 1}
    assert summary["cross_sell"]["skipped"] == {"converted_before_send": 1}
    assert summary["retention"]["status"] == {"expired": 1, "sent": 2}
