"""The report's money and its global control group on real dbt marts of a generated club.

Messages (a Cyrillic SMS of two segments, and emails) and control-group skips are written
into the outbox and skips of a generated club, ``phase_conversions`` is built by the real dbt,
and the report is read with a rules file that gives some offers a margin. The figures are
recomputed here from the mart's rows and the outbox, independently of the report's queries.
"""

from __future__ import annotations

import re
from collections import defaultdict
from datetime import date

import psycopg
import pytest
from report_club import fresh_database, settings_with_margins

from lifecycle.data.generator import generate
from lifecycle.insight import uplift
from lifecycle.insight.report import build_report, margins
from lifecycle.rules import sms
from lifecycle.rules.loading import load_rules
from lifecycle.transform.dbt import run_dbt

pytestmark = pytest.mark.slow

FIRST, LAST = date(2025, 5, 1), date(2025, 6, 30)
CYRILLIC = "Повертайтеся до клубу: місяць за ціною двох тижнів. Деталі на ресепшн, чекаємо!"
PHASES = "(array['activation', 'stimulation', 'cross_sell', 'retention', 'return'])"

MESSAGES = f"""
insert into ops.outbox (message_key, plan_date, customer_id, phase, step, cycle_key, channel,
    variant, to_address, body, send_at, window_end_at, deadline_at, status, sent_at)
select 'm-' || d || '-' || customer_id, d, customer_id,
    {PHASES}[1 + abs(hashtext(customer_id || 'phase')) % 5], 1, 'c',
    case when abs(hashtext(customer_id || 'ch')) % 3 = 0 then 'email' else 'sms' end,
    case when abs(hashtext(customer_id || 'v')) % 2 = 0 then 'A' else 'B' end,
    'x', $body${CYRILLIC}$body$, d + time '10:00', d + time '20:00', d + time '21:00', 'sent',
    d + time '10:00'
from generate_series(date '2025-04-20', date '2025-06-30', interval '1 day') as g (d),
    raw.customers
where abs(hashtext(customer_id || 'control')) % 5 <> 0
    and abs(hashtext(customer_id || d)) % 25 = 0;

insert into ops.skips (plan_date, customer_id, phase, step, reason, channel, variant)
select d, customer_id, {PHASES}[1 + abs(hashtext(customer_id || 'phase')) % 5], 1,
    'control_group',
    case when abs(hashtext(customer_id || 'ch')) % 3 = 0 then 'email' else 'sms' end,
    case when abs(hashtext(customer_id || 'v')) % 2 = 0 then 'A' else 'B' end
from generate_series(date '2025-04-20', date '2025-06-30', interval '1 day') as g (d),
    raw.customers
where abs(hashtext(customer_id || 'control')) % 5 = 0
    and abs(hashtext(customer_id || d)) % 25 = 0;
"""


@pytest.fixture(scope="module")
def club(server_url: str, tmp_path_factory: pytest.TempPathFactory):
    with fresh_database(server_url, "t_money_") as url:
        generate(2_000, date(2024, 1, 1), LAST, seed=3, url=url)
        with psycopg.connect(url) as conn:
            conn.execute(MESSAGES)
        run_dbt(url, ["build", "--select", "+phase_conversions", "--full-refresh", "--exclude",
                      "resource_type:unit_test", "resource_type:test"],
                as_of=LAST, target_path=tmp_path_factory.mktemp("dbt"))
        # margins: the retention step's variant B (its own offer) keeps 25%, return 40%
        yield url, settings_with_margins(tmp_path_factory,
                                         {"renew_discount": 0.25, "return_month": 0.4})


def _per_customer(url: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "select customer_id, phase, step, arm, variant, converted, revenue"
            " from analytics.phase_conversions where exposed_on between %s and %s",
            (FIRST, LAST)).fetchall()


def test_cost_per_phase_is_billed_in_segments_and_adds_up_to_the_headline(club) -> None:
    url, settings = club
    assert sms.segments(CYRILLIC) == 2
    page, h = build_report(url, FIRST, LAST, settings)
    with psycopg.connect(url) as conn:
        sent = dict(conn.execute(
            "select channel, count(*) from ops.outbox where status = 'sent'"
            " and plan_date between %s and %s group by 1", (FIRST, LAST)).fetchall())
    assert h["sms_segments"] == 2 * sent["sms"]
    expected = 2 * sent["sms"] * settings.sms_cost + sent["email"] * settings.email_cost
    assert h["cost"] == pytest.approx(expected, abs=0.01)
    # each phase card's cost is in segments too: the cards add up to the headline
    cards = [float(c.replace(",", "")) for c in
             re.findall(r"segments, [\d,]+ emails\) to [\d,]+ customers; cost "
                                      r"([\d,.]+)", page)]
    assert len(cards) == 5 and sum(cards) == pytest.approx(expected, abs=0.05)


def test_profit_uses_each_offers_margin_and_the_conversions_range(club) -> None:
    url, settings = club
    page, h = build_report(url, FIRST, LAST, settings)
    rows = _per_customer(url)
    margin = margins(load_rules(settings.rules_path))
    assert margin["retention|1|B"] == 0.25 and margin["return|1"] == 0.4
    # per phase and arm: customers once, converted if any exposure converted
    arms: dict[tuple, dict] = defaultdict(dict)
    for cid, phase, step, arm, variant, converted, revenue in rows:
        m = margin.get(f"{phase}|{step}|{variant}", margin.get(f"{phase}|{step}", 1.0))
        prev = arms[(phase, arm)].get(cid, (False, 0.0, 0.0))
        arms[(phase, arm)][cid] = (prev[0] or converted, max(prev[1], float(revenue)),
                                   max(prev[2], float(revenue) * m))
    gross_parts, revenue_parts = [], []
    for phase in ("activation", "stimulation", "cross_sell", "retention", "return"):
        t, c = arms.get((phase, "treated"), {}), arms.get((phase, "control"), {})
        cmp_ = uplift.compare(len(t), sum(v[0] for v in t.values()),
                              len(c), sum(v[0] for v in c.values()))
        conversions = cmp_.treated_conversions + cmp_.control_conversions
        if cmp_.incremental is None or not conversions:
            continue
        per = sum(v[1] for a in (t, c) for v in a.values() if v[0]) / conversions
        per_margin = sum(v[2] for a in (t, c) for v in a.values() if v[0]) / conversions
        revenue_parts.append(tuple(x * per for x in cmp_.incremental))
        gross_parts.append(tuple(x * per_margin for x in cmp_.incremental))
    assert revenue_parts, "no phase had conversions in both groups"
    rev, gross = uplift.summed(revenue_parts), uplift.summed(gross_parts)
    assert (h["incremental_revenue"], h["incremental_revenue_low"],
            h["incremental_revenue_high"]) == pytest.approx(rev, abs=0.01)
    assert (h["incremental_profit"], h["incremental_profit_low"],
            h["incremental_profit_high"]) == pytest.approx(
        tuple(g - h["cost"] for g in gross), abs=0.02)
    # margins below 100% shrink what the revenue contributes (the generated club converts
    # as it would anyway, so its incremental revenue is chance, of either sign)
    assert abs(h["incremental_profit"] + h["cost"]) < abs(h["incremental_revenue"])
    assert h["return_on_spend"] == pytest.approx(h["incremental_revenue"] / h["cost"], abs=0.01)
    assert h["return_on_spend_low"] <= h["return_on_spend"] <= h["return_on_spend_high"]
    assert "Profit after the message cost" in page and "times its offer's margin" in page


def test_global_control_group_counts_each_customer_once_over_all_phases(club) -> None:
    url, settings = club
    page, h = build_report(url, FIRST, LAST, settings)
    treated: dict[str, bool] = {}
    control: dict[str, bool] = {}
    for cid, _phase, _step, arm, _variant, converted, _revenue in _per_customer(url):
        group = treated if arm == "treated" else control
        group[cid] = group.get(cid, False) or converted
    assert not set(treated) & set(control)  # one hash decides the group for every phase
    expected = uplift.compare(len(treated), sum(treated.values()),
                              len(control), sum(control.values()))
    g = h["global_control"]
    assert (g["treated"], g["treated_conversions"], g["control"], g["control_conversions"]) == (
        expected.treated, expected.treated_conversions, expected.control,
        expected.control_conversions)
    assert g["control"] >= 100 and g["verdict"] == expected.verdict
    assert (g["difference_low"], g["difference_high"]) == pytest.approx(
        (expected.low, expected.high), abs=1e-4)
    assert "all phases (global control group)" in page and "Global control group:" in page
