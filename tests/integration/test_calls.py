"""The call channel on a hand-built customer_facts: planning within each club's capacity by
expected value, the call list, outcomes loaded all or nothing, no-answer retries, wrong numbers,
and dispatch leaving calls alone."""

from __future__ import annotations

import csv
import io
from datetime import date, timedelta
from pathlib import Path

import psycopg
import pytest
from test_plan_dispatch import SETTINGS, D, customer_ids, facts_row, load_facts, rules_with
from webhook_client import table

from lifecycle.calls.listing import call_list, calls_csv, calls_html
from lifecycle.calls.outcomes import load_outcomes
from lifecycle.data.loader import LoadError
from lifecycle.delivery.dispatch import dispatch
from lifecycle.delivery.leases import expire_and_recover
from lifecycle.delivery.transports.sandbox import SandboxTransport
from lifecycle.pipeline import logical_now
from lifecycle.planning.outbox import plan_day

# The default rules call in the return phase's step 3 (days 90-119 after the end): [call, sms,
# email]. Capacity: 3 a day for club main, 1 for club north; two attempts per call.
RULES = rules_with(
    ("capacity_per_day: 30", "capacity_per_day: 3"),
    ("per_club: {}", "per_club: {north: 1}"),
    ("max_attempts: 3", "max_attempts: 2"),
)
CALL_ONLY = rules_with(
    ("capacity_per_day: 30", "capacity_per_day: 1"),
    ("channels: [call, sms, email]", "channels: [call]"),
)


def lapsed(cid: str, revenue: float, day: date = D, **kw) -> dict:
    """A member whose membership ended 100 days before ``day`` (return step 3)."""
    since = 100 + (day - D).days
    return facts_row(cid, has_active_membership=False, has_renewal=False,
                     membership_status="expired", days_since_end=since, days_until_end=-since,
                     lifetime_revenue=revenue, **kw)


def rows(url: str, day: date = D) -> dict[str, tuple]:
    """customer -> (channel, status) of the day's messages, or ('skip', reason, channel)."""
    out = {c: (ch, st) for c, ch, st in table(
        url, f"select customer_id, channel, status from ops.outbox where plan_date = '{day}'")}
    for c, reason, ch in table(
        url, f"select customer_id, reason, channel from ops.skips where plan_date = '{day}'"):
        out[c] = ("skip", reason, ch)
    return out


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def club(fresh_db):
    a, b, c, d, e, n1, n2, s1, s2, capped = customer_ids(10, control=False)
    (ctl,) = customer_ids(1, control=True)
    with psycopg.connect(fresh_db) as conn:  # a call to `capped` 10 days ago: 1 per 30 days
        conn.execute(
            "insert into ops.outbox (message_key, plan_date, customer_id, phase, step, cycle_key,"
            " channel, to_address, body, send_at, window_end_at, deadline_at, status, sent_at,"
            " handed_at) values ('old', %(d)s, %(c)s, 'retention', 1, 'x', 'call', '+380', 'hi',"
            " %(t)s, %(t)s, %(t)s, 'sent', %(t)s, %(t)s)",
            {"d": D - timedelta(days=10), "c": capped, "t": logical_now(D - timedelta(days=10))},
        )
    load_facts(fresh_db, [
        lapsed(a, 100), lapsed(b, 400), lapsed(c, 300), lapsed(d, 200), lapsed(e, 50),
        lapsed(ctl, 500),  # the control customer's would-have call takes a place
        lapsed(n1, 10, club_id="north"), lapsed(n2, 20, club_id="north"),
        # two records of one phone: the more valuable is called, the other gets the email
        lapsed(s1, 900, phone="+380671110000"), lapsed(s2, 800, phone="+380671110000"),
        lapsed(capped, 1000),
    ])
    return fresh_db, dict(a=a, b=b, c=c, d=d, e=e, ctl=ctl, n1=n1, n2=n2, s1=s1, s2=s2,
                          capped=capped)


def test_calls_go_to_the_most_valuable_within_capacity_caps_control_and_one_contact(club):
    url, ids = club
    report = plan_day(url, RULES, D, SETTINGS)
    got = rows(url)
    # main's 3 places: s1 (900), the control customer's would-have (500), b (400); capped
    # (1000) had a call 10 days ago, s2 (800) shares s1's phone
    assert got[ids["s1"]] == ("call", "planned")
    assert got[ids["ctl"]] == ("skip", "control_group", "call")
    assert got[ids["b"]] == ("call", "planned")
    assert got[ids["capped"]] == ("sms", "planned")
    assert got[ids["s2"]] == ("email", "planned")
    for k in ("c", "d", "a", "e"):  # past the capacity: the next channel
        assert got[ids[k]] == ("sms", "planned"), k
    # north's one place goes to n2 (20 > 10)
    assert got[ids["n2"]] == ("call", "planned") and got[ids["n1"]] == ("sms", "planned")
    assert report.planned[("return", "call")] == 3
    assert report.control[("return", "call")] == 1

    calls = call_list(url, RULES, D, SETTINGS)
    assert [(c.club_id, c.customer_id) for c in calls] == [
        ("main", ids["s1"]), ("main", ids["b"]), ("north", ids["n2"])]
    assert [c.expected_value for c in calls] == [900.0, 400.0, 20.0]  # margin 1
    assert all(c.attempt == 1 and c.step == 3 and c.offer == "return_spa" for c in calls)
    assert calls[0].script.startswith("Hello Olena, this is your club")
    assert calls[0].phone == "+380671110000" and calls[0].best_time == "10:00-20:00"
    assert [c.customer_id for c in call_list(url, RULES, D, SETTINGS, "north")] == [ids["n2"]]
    parsed = list(csv.DictReader(io.StringIO(calls_csv(calls))))
    assert [r["call_id"] for r in parsed] == [str(c.call_id) for c in calls]
    assert parsed[0]["phone"] == "+380671110000" and parsed[0]["outcome"] == ""
    page = calls_html(calls, D, "UAH")
    assert page.count("<section>") == 2 and "+380671110000" in page and "@media print" in page

    # planning the day again changes nothing: the places are taken
    again = plan_day(url, RULES, D, SETTINGS)
    assert again.inserted_messages == 0 and rows(url) == got


def test_past_capacity_with_no_other_channel_is_a_call_capacity_skip(fresh_db):
    a, b = customer_ids(2, control=False)
    load_facts(fresh_db, [lapsed(a, 10), lapsed(b, 20)])
    plan_day(fresh_db, CALL_ONLY, D, SETTINGS)
    assert rows(fresh_db) == {b: ("call", "planned"), a: ("skip", "call_capacity", None)}


def test_outcomes_load_all_or_nothing_with_located_errors_and_twice_changes_nothing(
    club, tmp_path
):
    url, ids = club
    plan_day(url, RULES, D, SETTINGS)
    s1, b, n2 = (c.call_id for c in call_list(url, RULES, D, SETTINGS))
    (sms_id,) = table(url, f"select outbox_id from ops.outbox where customer_id = '{ids['a']}'")[0]
    bad = write(tmp_path / "outcomes.csv", [
        "call_id,called_at,outcome,note",
        f"{s1},2026-06-15T11:00:00+03:00,reached,booked a visit",
        f"{b},2026-06-15T11:05:00+03:00,maybe,",
        f"{n2},2026-06-15 11:10,no_answer,",
        "999999,2026-06-15T11:20:00+03:00,reached,",
        f"{sms_id},2026-06-15T11:20:00+03:00,reached,",
        f"{s1},2026-06-15T11:30:00+03:00,booked,",
        f"{b},2026-06-14T11:05:00+03:00,reached,",
    ])
    with pytest.raises(LoadError) as err:
        load_outcomes(url, bad)
    where = {(i.line, i.column): i.reason for i in err.value.errors}
    assert set(where) == {(3, "outcome"), (4, "called_at"), (7, "call_id")}
    assert "expected one of reached, no_answer" in where[(3, "outcome")]
    assert "has no UTC offset" in where[(4, "called_at")]
    assert "first on line 2" in where[(7, "call_id")]
    assert all(i.file == "outcomes.csv" for i in err.value.errors)
    # the file's values are right now; what the warehouse knows is wrong
    bad = write(tmp_path / "outcomes.csv", [
        "call_id,called_at,outcome,note",
        f"{s1},2026-06-15T11:00:00+03:00,reached,booked a visit",
        "999999,2026-06-15T11:20:00+03:00,reached,",
        f"{sms_id},2026-06-15T11:20:00+03:00,reached,",
        f"{b},2026-06-14T11:05:00+03:00,reached,",
    ])
    with pytest.raises(LoadError) as err:
        load_outcomes(url, bad)
    assert [(i.line, i.column) for i in err.value.errors] == [
        (3, "call_id"), (4, "call_id"), (5, "called_at")]
    assert "no call with this id" in err.value.errors[0].reason
    assert "an sms message, not a call" in err.value.errors[1].reason
    assert "before the call's day (2026-06-15)" in err.value.errors[2].reason
    # nothing partial: the good first line was not loaded either
    assert table(url, "select count(*) from ops.message_events") == [(0,)]
    assert table(url, "select count(*) from ops.outbox where channel = 'call' "
                      "and status = 'planned'") == [(3,)]

    # the call list itself, filled in (its other columns are not read)
    listed = list(csv.DictReader(io.StringIO(calls_csv(call_list(url, RULES, D, SETTINGS)))))
    filled = {s1: ("2026-06-15T11:00:00+03:00", "booked"),
              b: ("2026-06-15T12:00:00+03:00", "no_answer")}
    for r in listed:
        r["called_at"], r["outcome"] = filled.get(int(r["call_id"]), ("", ""))
    good = tmp_path / "filled.csv"
    with good.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(listed[0]))
        w.writeheader()
        w.writerows(listed)
    first = load_outcomes(url, good)
    assert dict(first.loaded) == {"booked": 1, "no_answer": 1} and first.not_called == 1
    before = table(url, "select * from ops.message_events order by event_id")
    second = load_outcomes(url, good)
    assert not second.loaded and second.unchanged == 2
    assert table(url, "select * from ops.message_events order by event_id") == before
    assert table(url, "select outbox_id, status, last_error, handed_at is not null "
                      f"from ops.outbox where channel = 'call' and plan_date = '{D}' "
                      "order by outbox_id") == sorted([
        (s1, "sent", None, True), (b, "failed", "call_no_answer", False),
        (n2, "planned", None, False)])
    assert table(url, "select provider, channel, event_type, outbox_id from ops.message_events "
                      "order by outbox_id") == sorted([
        ("call_centre", "call", "call_booked", s1), ("call_centre", "call", "call_no_answer", b)],
        key=lambda r: r[3])
    # an outcome is final
    changed = write(tmp_path / "changed.csv", ["call_id,called_at,outcome",
                                               f"{s1},2026-06-15T11:00:00+03:00,not_interested"])
    with pytest.raises(LoadError, match="already has the outcome booked"):
        load_outcomes(url, changed)


def test_no_answer_is_called_again_on_a_later_day_up_to_max_attempts(club, tmp_path):
    url, ids = club
    b = ids["b"]
    day = D
    for attempt in (1, 2):
        plan_day(url, RULES, day, SETTINGS)
        (call,) = [c for c in call_list(url, RULES, day, SETTINGS) if c.customer_id == b]
        assert call.attempt == attempt
        load_outcomes(url, write(tmp_path / f"{day}.csv", [
            "call_id,called_at,outcome", f"{call.call_id},{day}T12:00:00+03:00,no_answer"]))
        # never twice the same day: planning the day again after the outcome adds nothing
        assert plan_day(url, RULES, day, SETTINGS).inserted_messages == 0
        day += timedelta(days=1)
        load_facts(url, [lapsed(b, 400, day)], as_of=day)
    # two calls unanswered (max_attempts 2): the third day's message is the SMS
    plan_day(url, RULES, day, SETTINGS)
    assert rows(url, day) == {b: ("sms", "planned")}
    assert table(url, f"select plan_date, channel, status from ops.outbox where customer_id = "
                      f"'{b}' order by plan_date") == [
        (D, "call", "failed"), (D + timedelta(days=1), "call", "failed"),
        (D + timedelta(days=2), "sms", "planned")]
    # with the window closed (days_since_end 120: step 4, a step of its own) no retry of step 3
    later = D + timedelta(days=20)
    load_facts(url, [lapsed(b, 400, later)], as_of=later)
    plan_day(url, RULES, later, SETTINGS)
    assert table(url, f"select step from ops.outbox where plan_date = '{later}'") == [(4,)]


def test_a_wrong_number_kills_the_phone_and_the_next_sms_is_a_skip(club, tmp_path):
    url, ids = club
    b = ids["b"]
    load_facts(url, [lapsed(b, 400, email=None, email_valid=False, email_contactable=False)])
    plan_day(url, RULES, D, SETTINGS)
    (call,) = call_list(url, RULES, D, SETTINGS)
    report = load_outcomes(url, write(tmp_path / "desk.csv", [
        "call_id,called_at,outcome", f"{call.call_id},2026-06-15T12:00:00+03:00,wrong_number"]))
    assert report.dead_phones == 1
    assert table(url, "select kind, evidence, source from ops.dead_contacts") == [
        ("phone", "wrong_number", "calls:desk.csv")]
    nxt = D + timedelta(days=1)
    load_facts(url, [lapsed(b, 400, nxt, email=None, email_valid=False,
                            email_contactable=False)], as_of=nxt)
    plan_day(url, RULES, nxt, SETTINGS)
    assert rows(url, nxt) == {b: ("skip", "dead_contact", None)}


def test_dispatch_never_sends_a_call(club):
    url, _ = club
    plan_day(url, RULES, D, SETTINGS)
    report = dispatch(url, SandboxTransport(url), now=logical_now(D), plan_date=D,
                      settings=SETTINGS)
    dispatch(url, SandboxTransport(url), now=logical_now(D) + timedelta(hours=5),
             settings=SETTINGS)  # the wall-clock path, every channel
    assert report.claimed == 7  # the 6 SMS and the email
    assert table(url, "select count(*) from ops.sandbox_messages s join ops.outbox o "
                      "using (outbox_id) where o.channel = 'call'") == [(0,)]
    with psycopg.connect(url) as conn:  # a week later: deadlines long past
        expire_and_recover(conn, now=logical_now(D) + timedelta(days=7))
        conn.commit()
    assert table(url, "select status, attempts, batch_id, count(*) from ops.outbox "
                      f"where channel = 'call' and plan_date = '{D}' group by 1, 2, 3") == [
        ("planned", 0, None, 3)]


def test_the_report_charges_every_call_made_and_counts_reached_ones_as_sent(club, tmp_path):
    from lifecycle.insight.report import build_report

    url, ids = club
    plan_day(url, RULES, D, SETTINGS)
    s1, b, n2 = (c.call_id for c in call_list(url, RULES, D, SETTINGS))
    load_outcomes(url, write(tmp_path / "desk.csv", [
        "call_id,called_at,outcome", f"{s1},2026-06-15T11:00:00+03:00,interested",
        f"{b},2026-06-15T11:10:00+03:00,no_answer"]))
    _, h = build_report(url, D, D, SETTINGS)
    assert h["calls"] == 2  # n2 is not called yet: no outcome, no cost
    assert h["cost"] == pytest.approx(2 * SETTINGS.call_cost, abs=0.01)


def test_the_simulated_desk_makes_the_days_calls_at_the_models_rates(club, tmp_path):
    from lifecycle.insight.responses import call_outcome, default_response_model
    from lifecycle.insight.simulate import make_calls

    url, _ = club
    model = default_response_model().model_copy(
        update={"call_reached": 0.5, "call_wrong_number": 0.25})
    plan_day(url, RULES, D, SETTINGS)
    calls = call_list(url, RULES, D, SETTINGS)
    assert make_calls(url, D, RULES, model, 7, SETTINGS, tmp_path) == 3
    drawn = {c.call_id: call_outcome(model, 7, D, c.call_id) for c in calls}
    assert table(url, "select outbox_id, event_type from ops.message_events "
                      "where provider = 'call_centre' order by 1") == sorted(
        (i, f"call_{o}") for i, o in drawn.items())
    dead = sum(o == "wrong_number" for o in drawn.values())
    assert table(url, "select count(*) from ops.dead_contacts") == [(dead,)]
    assert make_calls(url, D, RULES, model, 7, SETTINGS, tmp_path) == 0  # all made
