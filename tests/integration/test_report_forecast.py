"""The report's "Next month" forecast on a hand-built club, real dbt marts, computed by hand.

The club (report period 2025-06-01..30, margins from a copy of the shipped rules with the
retention offer at 50%):

* retention: 600 messaged customers on 06-10 (SMS of one segment), 300 of them renewed on
  06-15 at 1,200; 300 control customers, 75 renewed: +25 points. 30 of the messaged have a
  phone that turned out dead and no email; 20 more a dead phone and a live email.
* 100 customers the rules chose for retention on 06-20 and 06-21 without consent on any
  channel, and 50 whose run of planning days started on 05-31 (already messaged before the
  month: not entrants).
* return: 400 messaged on 06-01, 40 bought again on 06-10 at 1,200; 200 control, 20 bought:
  no difference (the zero-effect case).
* 10 service purchases at 250 in the year (Y's revenue); memberships sold in the year are the
  375 renewals and 60 come-backs at 1,200 (Z's revenue); the original ones are older.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

import psycopg
import pytest
from report_club import fresh_database, settings_with_margins

from lifecycle.contacts import mark_dead
from lifecycle.insight import uplift
from lifecycle.insight.report import build_report, margins
from lifecycle.rules.loading import load_rules
from lifecycle.transform.dbt import run_dbt

pytestmark = pytest.mark.slow

FIRST, LAST = date(2025, 6, 1), date(2025, 6, 30)


def _ids(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i:04d}" for i in range(1, n + 1)]


RETAINED, HELD = _ids("r", 600), _ids("k", 300)
NO_CONSENT, ONGOING = _ids("n", 100), _ids("o", 50)
RETURNED, HELD_RETURN = _ids("t", 400), _ids("u", 200)
DEAD_ONLY, DEAD_WITH_EMAIL = RETAINED[570:], RETAINED[550:570]


def _fill(conn: psycopg.Connection) -> None:
    everyone = RETAINED + HELD + NO_CONSENT + ONGOING + RETURNED + HELD_RETURN
    phones = {c: f"+38050{i:07d}" for i, c in enumerate(everyone, 1)}
    with conn.cursor() as cur:
        cur.executemany(
            "insert into raw.customers (customer_id, first_name, email, phone, timezone, "
            "created_at) values (%s, 'A', %s, %s, 'Europe/Kyiv', '2024-01-01')",
            [(c, f"{c}@example.com" if c in DEAD_WITH_EMAIL else None, phones[c])
             for c in everyone])
        cur.executemany(
            "insert into raw.consents values (%s, %s, %s, '2024-01-01')",
            [(c, ch, c not in NO_CONSENT) for c in everyone for ch in ("sms", "email")])
        # the memberships the steps are about: retention's end on 07-05, return's ran out 04-30
        cur.executemany(
            "insert into raw.memberships values (%s, %s, 'year', %s, %s, %s, 1000, 'active')",
            [(f"m-{c}", c, date(2024, 6, 1), date(2024, 6, 1), date(2025, 7, 5))
             for c in RETAINED + HELD + NO_CONSENT + ONGOING]
            + [(f"m-{c}", c, date(2024, 5, 1), date(2024, 5, 1), date(2025, 4, 30))
               for c in RETURNED + HELD_RETURN])
        cur.executemany(
            "insert into raw.memberships values (%s, %s, 'year', %s, %s, %s, 1200, 'active')",
            [(f"m2-{c}", c, date(2025, 6, 15), date(2025, 7, 6), date(2026, 7, 5))
             for c in RETAINED[:300] + HELD[:75]]
            + [(f"m2-{c}", c, date(2025, 6, 10), date(2025, 6, 10), date(2026, 6, 9))
               for c in RETURNED[:40] + HELD_RETURN[:20]])
        cur.executemany(
            "insert into raw.purchases values (%s, %s, 'massage', '2025-03-01 12:00+00', 250)",
            [(f"p-{c}", c) for c in ONGOING[:10]])
        outbox = [(c, "retention", "A", date(2025, 6, 10)) for c in RETAINED] + [
            (c, "return", "A", date(2025, 6, 1)) for c in RETURNED]
        cur.executemany(
            "insert into ops.outbox (message_key, plan_date, customer_id, phase, step, "
            "cycle_key, channel, variant, to_address, body, send_at, window_end_at, deadline_at,"
            " status, sent_at) values (%s, %s, %s, %s, 1, 'c', 'sms', %s, %s, 'Renew now', "
            "%s::date + time '10:00', %s::date + time '20:00', %s::date + time '21:00', 'sent',"
            " %s::date + time '10:00')",
            [(f"m-{c}-{p}", d, c, p, v, phones[c], d, d, d, d) for c, p, v, d in outbox])
        skips = [(date(2025, 6, 10), c, "retention", "control_group", "sms", "A") for c in HELD]
        skips += [(date(2025, 6, 1), c, "return", "control_group", "sms", "A")
                  for c in HELD_RETURN]
        skips += [(d, c, "retention", "no_consent", None, None) for c in NO_CONSENT
                  for d in (date(2025, 6, 20), date(2025, 6, 21))]
        skips += [(d, c, "retention", "already_sent", None, None) for c in ONGOING
                  for d in [date(2025, 5, 31)] + [date(2025, 6, k) for k in range(1, 6)]]
        cur.executemany(
            "insert into ops.skips (plan_date, customer_id, phase, step, reason, channel, "
            "variant) values (%s, %s, %s, 1, %s, %s, %s)", skips)
    for c in DEAD_ONLY + DEAD_WITH_EMAIL:
        mark_dead(conn, "phone", phones[c], "wrong_number", datetime(2025, 6, 12, tzinfo=UTC),
                  "calls:test.csv")


@pytest.fixture(scope="module")
def club(server_url: str, tmp_path_factory: pytest.TempPathFactory):
    with fresh_database(server_url, "t_forecast_") as url:
        with psycopg.connect(url) as conn:
            _fill(conn)
        run_dbt(url, ["build", "--select", "+phase_conversions", "+customer_facts",
                      "--full-refresh", "--exclude", "resource_type:unit_test",
                      "resource_type:test"],
                as_of=LAST, target_path=tmp_path_factory.mktemp("dbt"))
        yield url, settings_with_margins(tmp_path_factory, {"renew_perk": 0.5})


def test_the_forecast_holds_the_figures_computed_by_hand(club) -> None:
    url, settings = club
    rules = load_rules(settings.rules_path)
    margin = margins(rules)
    assert margin["retention|1|A"] == 0.5 and margin["return|1"] == 1.0
    assert rules.model.policy.control_group.percent == 10
    page, h = build_report(url, FIRST, LAST, settings)
    # the measured comparisons, as the report shows them
    retention = uplift.compare(600, 300, 300, 75)
    assert retention.diff == pytest.approx(0.25) and retention.verdict == uplift.EFFECT
    back = uplift.compare(400, 40, 200, 20)
    assert back.diff == 0 and back.verdict == uplift.NO_EFFECT
    # retention: 600 + 300 + 100 entered (the 50 already running before the month did not);
    # live: 900 less the 30 dead phones without an email (the 100 have no consent) = 870;
    # less the 10% control group: 783 to message; 783 x 0.25 = 195.75 renewals added;
    # each worth 1,200 x 50% = 600; the SMS cost 600 x 1 segment x 0.20 / 600 = 0.20 a
    # customer: 783 x 0.20 = 156.60. Profit 195.75 x 600 - 156.60 = 117,293.40.
    r_profit = tuple(783 * d * 600 - 156.6 for d in (0.25, retention.low, retention.high))
    assert r_profit[0] == pytest.approx(117_293.4)
    # return: 600 entered, all live: 540 to message, 0 added, 1,200 a conversion at 100%;
    # 540 x 0.20 = 108 of messages: the point is a loss of 108, the range includes zero.
    b_profit = tuple(540 * d * 1200 - 108 for d in (0.0, back.low, back.high))
    assert b_profit[0] == pytest.approx(-108) and b_profit[1] < 0 < b_profit[2]
    total = uplift.summed([r_profit, b_profit])
    assert (h["forecast_profit"], h["forecast_profit_low"], h["forecast_profit_high"]) == (
        pytest.approx(total, abs=0.01))
    # the section's table, row by row: audience, live (share), to message, profit and range
    section = page.split('id="forecast"')[1].split("</section>")[0]
    rows = {r.split("</td>")[0]: r for r in section.split("<tr><td>")[1:]}
    assert "<td>1,000</td><td>870 (87.0%)</td><td>783</td>" in rows["retention"]
    assert (f"<td>{r_profit[0]:,.0f}<br><span class=\"ci\">95% interval {r_profit[1]:,.0f} to "
            f"{r_profit[2]:,.0f}</span>") in rows["retention"]
    assert "Expected to pay" in rows["retention"]
    assert "<td>600</td><td>600 (100.0%)</td><td>540</td>" in rows["return"]
    assert "<td>-108<br>" in rows["return"]
    assert "The range includes zero: the messages may add nothing" in rows["return"]
    # the rule of thumb: X = 1,650 customers with a phone on record; Y = 250 x 80% (the
    # lowest cross-sell margin) = 200; Z = 1,200 x 50% = 600:
    # 1,650 x 0.7 x (0.07 x 200 + 0.02 x 600) = 30,030
    assert "P = 1,650 × 70% × (7% × 200 + 2% × 600) = 30,030 UAH" in section
    assert h["forecast_rule_of_thumb"] == pytest.approx(30_030)
    # measured: 1,520 of 1,650 live (92.1%); no service phase measured ("?"); the membership
    # phases added 0.25 x 600 + 0 x 400 = 150 for 1,000 messaged: 15%
    assert "P = 1,650 × 92.1% × (? × 200 + 15% × 600) = not known" in section
    assert h["forecast_rule_of_thumb_measured"] is None
    assert "Next month's profit from the messages" in page
