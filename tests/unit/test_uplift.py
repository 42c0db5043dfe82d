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
    newcombe,
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
