"""Next month's profit per phase and the rule of thumb, on examples computed by hand."""

from __future__ import annotations

import pytest

from lifecycle.insight.forecast import (
    article_rule,
    measured_rule,
    phase_forecast,
    total_profit,
)
from lifecycle.insight.uplift import NO_EFFECT, TOO_FEW, compare


def test_a_phase_forecast_computed_by_hand():
    # Measured: 56 of 70 messaged customers converted (80%), 48 of 80 control customers (60%):
    # a difference of +0.2 whose 95% interval Newcombe (1998, table II, method 10) publishes as
    # 0.0524 to 0.3339 (rounded to 4 digits: hence the tolerance below).
    cmp_ = compare(70, 56, 80, 48)
    # Next month: 1,000 customers entered the phase, 800 of them with a live contact (80%), the
    # control group holds back 10%: 720 customers to message.
    # The 56 + 48 = 104 converted customers brought 52,000 (500 each) at a 40% margin: 20,800,
    # 200 per conversion. The period's 70 messaged customers cost 28.00 (70 SMS of 2 segments
    # at 0.20): 0.40 a customer, 720 x 0.40 = 288 next month.
    f = phase_forecast("retention", audience=1_000, live=800, control_share=0.10, cmp=cmp_,
                       margin_revenue=20_800, cost=28.0, customers_messaged=70)
    assert f.live_share == 0.8
    assert f.messaged == pytest.approx(720)
    assert f.value_per_conversion == pytest.approx(200)
    assert f.cost == pytest.approx(288)
    # conversions added: 720 x 0.2 = 144 (720 x 0.0524 = 37.728 to 720 x 0.3339 = 240.408)
    point, low, high = f.conversions
    assert point == pytest.approx(144)
    assert low == pytest.approx(37.728, abs=720 * 0.00005)
    assert high == pytest.approx(240.408, abs=720 * 0.00005)
    # profit: 144 x 200 - 288 = 28,512; 37.728 x 200 - 288 = 7,257.6; 240.408 x 200 - 288
    # = 47,793.6 (each end within 720 x 200 x 0.00005 = 7.2 of the rounded table's)
    point, low, high = f.profit
    assert point == pytest.approx(28_512)
    assert low == pytest.approx(7_257.6, abs=7.2)
    assert high == pytest.approx(47_793.6, abs=7.2)
    # 70 and 80 customers could only show a difference of about 22 points: "too few"
    assert cmp_.verdict == TOO_FEW
    assert "guess" in f.words


def test_no_true_effect_gives_a_range_that_includes_zero_and_says_a_loss_is_possible():
    # 20 of 400 in both groups: no difference. 500 entered the phase, 400 live, 360 to message;
    # 40 conversions brought 40,000 at 100%: 1,000 each; 80.00 for 400 customers: 0.20 each,
    # 360 x 0.20 = 72 next month. The point is 0 x 1,000 - 72 = -72: the cost, a loss.
    cmp_ = compare(400, 20, 400, 20)
    assert cmp_.verdict == NO_EFFECT
    f = phase_forecast("stimulation", 500, 400, 0.10, cmp_, 40_000, 80.0, 400)
    point, low, high = f.profit
    assert point == pytest.approx(-72)
    assert low < 0 < high
    # symmetric difference interval: the ends are 360 x 1,000 x (the interval's half width)
    half = 360 * 1_000 * cmp_.high
    assert (low, high) == pytest.approx((-half - 72, half - 72))
    assert "includes zero" in f.words and "loss" in f.words


def test_the_total_sums_the_phases_and_combines_their_ranges():
    a = phase_forecast("retention", 1_000, 800, 0.10, compare(70, 56, 80, 48), 20_800, 28.0,
                       70)
    b = phase_forecast("stimulation", 500, 400, 0.10, compare(400, 20, 400, 20), 40_000,
                       80.0, 400)
    point, low, high = total_profit([a, b])
    assert point == pytest.approx(28_512 - 72)
    # MOVER: each side's distance is the root of the summed squared distances
    la, lb = a.profit[0] - a.profit[1], b.profit[0] - b.profit[1]
    assert point - low == pytest.approx((la**2 + lb**2) ** 0.5)
    assert low < point < high


def test_a_phase_without_a_control_group_or_conversions_has_no_profit():
    unmeasured = phase_forecast("activation", 100, 90, 0.1, compare(50, 5, 0, 0), 500, 10, 50)
    assert unmeasured.conversions is None and unmeasured.profit is None
    assert "Not measured" in unmeasured.words
    worthless = phase_forecast("activation", 100, 90, 0.1, compare(50, 0, 50, 0), 0, 10, 50)
    assert worthless.conversions == (0.0, pytest.approx(90 * 0.9 * compare(50, 0, 50, 0).low),
                                     pytest.approx(90 * 0.9 * compare(50, 0, 50, 0).high))
    assert worthless.profit is None and "No conversion" in worthless.words
    assert total_profit([unmeasured, worthless]) is None
    # an activation's conversion is a visit, which brings no revenue: the profit is the cost
    # (90 live x 0.9 = 81 to message at 10 / 50 = 0.20 each: 16.20)
    visits = phase_forecast("activation", 100, 90, 0.1, compare(50, 20, 50, 5), 0, 10, 50)
    assert visits.profit == pytest.approx((-16.2, -16.2, -16.2))
    assert "no revenue" in visits.words


def test_the_article_rule_of_thumb_with_the_numbers_put_in():
    # X = 1,000 customers; Y = a 250 service sale at 80% = 200; Z = a 5,000 membership at 60%
    # = 3,000. P = 1,000 x 0.7 x (0.07 x 200 + 0.02 x 3,000) = 700 x (14 + 60) = 51,800.
    rule = article_rule(1_000, 200.0, 3_000.0)
    assert rule.profit == pytest.approx(51_800)
    assert rule.filled("UAH") == "P = 1,000 × 70% × (7% × 200 + 2% × 3,000) = 51,800 UAH"


def test_the_same_formula_with_what_the_club_measured():
    # live share 85%; service phases: cross-sell added 0.2 x 70 = 14 conversions for 70
    # messaged, stimulation 0 for 400: 14 / 470 per messaged customer; membership phases:
    # retention 30/100 against 20/100, +0.1 x 100 = 10 for 100: 0.1.
    # P = 1,000 x 0.85 x (14/470 x 200 + 0.1 x 3,000) = 850 x (5.957... + 300) = 260,063.8
    by_phase = {"cross_sell": compare(70, 56, 80, 48), "stimulation": compare(400, 20, 400, 20),
                "retention": compare(100, 30, 100, 20), "activation": compare(100, 50, 100, 10)}
    rule = measured_rule(1_000, 0.85, by_phase, 200.0, 3_000.0)
    assert rule.service == pytest.approx(14 / 470)
    assert rule.sale == pytest.approx(0.1)
    assert rule.profit == pytest.approx(850 * (14 / 470 * 200 + 300))
    assert rule.filled("UAH") == "P = 1,000 × 85% × (3% × 200 + 10% × 3,000) = 260,064 UAH"
    # no membership phase measured: the rate is unknown and so is P
    partial = measured_rule(1_000, 0.85, {"cross_sell": by_phase["cross_sell"]}, 200.0, 3_000.0)
    assert partial.sale is None and partial.profit is None
    assert partial.filled("UAH").endswith("(20% × 200 + ? × 3,000) = not known")
