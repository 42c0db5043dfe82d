"""The report's statistics: Newcombe's interval against published values, and the verdict."""

from __future__ import annotations

import numpy as np
import pytest

from lifecycle.insight.uplift import (
    EFFECT,
    MAX_DETECTABLE,
    MIN_ARM,
    NO_EFFECT,
    TOO_FEW,
    compare,
    money,
    money_total,
    newcombe,
    summed,
    total,
    wilson,
)


@pytest.mark.parametrize(
    ("x1", "n1", "x2", "n2", "low", "high"),
    [
        # Newcombe (1998), Statistics in Medicine 17:873-890, Table II, method 10
        (56, 70, 48, 80, 0.0524, 0.3339),
        (9, 10, 3, 10, 0.1705, 0.8090),
        (5, 56, 0, 29, -0.0381, 0.1926),
        (0, 10, 0, 20, -0.1611, 0.2775),
        (10, 10, 0, 20, 0.6791, 1.0000),
        (10, 10, 0, 10, 0.6075, 1.0000),
    ],
)
def test_newcombe_hybrid_score_interval_matches_the_published_table(x1, n1, x2, n2, low, high):
    d, lo, hi = newcombe(x1, n1, x2, n2)
    assert d == pytest.approx(x1 / n1 - x2 / n2)
    assert (round(lo, 4), round(hi, 4)) == (low, high)


def test_wilson_interval_of_zero_and_all() -> None:
    # Newcombe (1998) Table I's companion values: 0/10 -> [0, 0.2775], 10/10 -> [0.7225, 1]
    assert tuple(round(v, 4) for v in wilson(0, 10)) == (0.0, 0.2775)
    assert tuple(round(v, 4) for v in wilson(10, 10)) == (0.7225, 1.0)
    with pytest.raises(ValueError, match="x=11 is not within 0..n=10"):
        wilson(11, 10)


def test_verdicts_and_their_reasons() -> None:
    assert compare(400, 80, 400, 40).verdict == EFFECT
    assert compare(400, 40, 400, 80).verdict == EFFECT  # fewer conversions is an effect too
    assert compare(400, 44, 400, 40).verdict == NO_EFFECT
    one = compare(500, 60, 1, 0)
    assert one.verdict == TOO_FEW and "control group has 1 customers" in one.reason
    assert one.low is not None  # the interval is still shown, with the warning
    assert compare(500, 60, 0, 0).verdict == TOO_FEW and compare(500, 60, 0, 0).low is None
    # both arms above the minimum, but too small to see 10 points
    wide = compare(MIN_ARM + 10, 20, MIN_ARM + 10, 10)
    assert wide.detectable > MAX_DETECTABLE and wide.verdict == TOO_FEW
    assert "would only notice a difference of" in wide.reason


def test_summed_interval_is_recovered_from_the_phases() -> None:
    a, b = compare(400, 80, 400, 40), compare(900, 135, 300, 30)
    t = total([a, b])
    pa, la, ha = a.incremental
    pb, lb, hb = b.incremental
    assert t.point == pytest.approx(pa + pb)
    assert t.low == pytest.approx(pa + pb - ((pa - la) ** 2 + (pb - lb) ** 2) ** 0.5)
    assert t.high == pytest.approx(pa + pb + ((ha - pa) ** 2 + (hb - pb) ** 2) ** 0.5)
    # wider than either part, narrower than the parts' intervals added end to end
    assert la + lb < t.low < t.point < t.high < ha + hb
    assert t.verdict == EFFECT
    assert total([compare(500, 60, 3, 0)]).verdict == TOO_FEW
    assert total([compare(500, 60, 0, 0)]) is None


@pytest.mark.parametrize(("n_treated", "n_control", "rate"),
                         [(400, 100, 0.10), (1500, 150, 0.04), (400, 400, 0.30)])
def test_with_no_true_effect_the_verdict_says_effect_in_at_most_6_percent(
    n_treated: int, n_control: int, rate: float
) -> None:
    rng = np.random.default_rng(20260601)
    replicates = 2000
    verdicts = [
        compare(n_treated, int(rng.binomial(n_treated, rate)),
                n_control, int(rng.binomial(n_control, rate))).verdict
        for _ in range(replicates)
    ]
    effect = verdicts.count(EFFECT) / replicates
    assert effect <= 0.06, effect
    # and the sizes were big enough to judge: the verdicts are not all "too few"
    assert verdicts.count(TOO_FEW) < replicates / 2


def test_a_true_effect_of_ten_points_is_found_most_of_the_time() -> None:
    rng = np.random.default_rng(7)
    verdicts = [compare(600, int(rng.binomial(600, 0.25)), 300,
                        int(rng.binomial(300, 0.15))).verdict for _ in range(1000)]
    assert verdicts.count(EFFECT) / 1000 >= 0.75


# Newcombe's interval over many seeded replicates with a known true difference: base rates of
# 3% and 20%, control groups of 50 and 100 beside a messaged group nine times larger, true
# effects of 0, +3 and +10 points. Coverage measured on these seeds (3,000 replicates each):
# 94.9% to 96.2% (docs/measurement.md).
COVERAGE_SETTINGS = [
    (base, n_control, effect)
    for base in (0.03, 0.20) for n_control in (50, 100) for effect in (0.0, 0.03, 0.10)
]


@pytest.mark.parametrize(("base", "n_control", "effect"), COVERAGE_SETTINGS)
def test_newcombe_interval_covers_the_true_difference_95_percent_of_the_time(
    base: float, n_control: int, effect: float
) -> None:
    n_treated = 9 * n_control
    rng = np.random.default_rng([20260618, int(base * 100), n_control, int(effect * 100)])
    replicates = 3000
    treated = rng.binomial(n_treated, base + effect, replicates)
    control = rng.binomial(n_control, base, replicates)
    covered = effect_verdicts = 0
    for xt, xc in zip(treated.tolist(), control.tolist(), strict=True):
        c = compare(n_treated, xt, n_control, xc)
        covered += c.low <= effect <= c.high
        effect_verdicts += c.verdict == EFFECT
        # every judged row carries the smallest difference these sizes would show
        assert c.detectable is not None and c.detectable_words
    coverage = covered / replicates
    assert 0.93 <= coverage <= 0.97, f"coverage {coverage:.3f} at {base}, {n_control}, {effect}"
    if effect == 0:
        assert effect_verdicts / replicates <= 0.06, effect_verdicts / replicates
    if (base, n_control, effect) in ((0.03, 100, 0.10), (0.03, 50, 0.10)):
        # a large effect on a low base is found: the detectable difference is judged at the
        # control's rate, not at a rate the effect itself raised
        assert effect_verdicts / replicates >= 0.5, effect_verdicts / replicates


def test_too_few_and_no_effect_rows_state_the_minimum_detectable_effect() -> None:
    few = compare(450, 14, 50, 1)
    assert few.verdict in (TOO_FEW, NO_EFFECT)
    # at the control group's rate (1 of 50, smoothed: 2 of 52), whatever the messaged rate
    assert few.detectable == pytest.approx(
        (1.959963984540054 + 0.8416212335729143)
        * ((2 / 52) * (1 - 2 / 52) * (1 / 450 + 1 / 50)) ** 0.5)
    assert compare(450, 60, 50, 1).detectable == few.detectable
    assert f"{few.detectable * 100:.1f} points" in few.detectable_words
    assert compare(450, 14, 0, 0).detectable_words == ""


def test_money_scales_the_conversions_range_by_the_value_of_a_conversion() -> None:
    c = compare(900, 135, 100, 10)  # 15% against 10%: +45 conversions
    m = money(c, revenue=145 * 2000.0, margin_revenue=145 * 500.0, cost=300.0)
    point, low, high = c.incremental
    assert m.revenue == pytest.approx((point * 2000, low * 2000, high * 2000))
    assert m.gross == pytest.approx((point * 500, low * 500, high * 500))
    assert m.profit == pytest.approx((point * 500 - 300, low * 500 - 300, high * 500 - 300))
    assert m.return_on_spend == pytest.approx(tuple(v * 2000 / 300 for v in (point, low, high)))
    # nothing converted in either group: no value per conversion, no money figure
    none = money(compare(900, 0, 100, 0), 0.0, 0.0, 300.0)
    assert none.revenue is None and none.profit is None and none.return_on_spend is None
    # free messages have no return on spend
    assert money(c, 1.0, 1.0, 0.0).return_on_spend is None


def test_money_summed_over_phases_keeps_every_cost_and_combines_the_ranges() -> None:
    a = money(compare(900, 135, 100, 10), 145 * 2000.0, 145 * 2000.0, 300.0)
    b = money(compare(400, 40, 400, 40), 80 * 100.0, 80 * 40.0, 50.0)
    c = money(compare(400, 0, 400, 0), 0.0, 0.0, 25.0)
    t = money_total([a, b, c])
    assert t.cost == 375.0
    assert t.revenue == pytest.approx(summed([a.revenue, b.revenue]))
    assert t.profit == pytest.approx(tuple(v - 375.0 for v in summed([a.gross, b.gross])))
    assert t.profit[1] < t.profit[0] < t.profit[2]
