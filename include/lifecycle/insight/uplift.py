"""Messaged customers against the control group: intervals and a verdict a manager can read.

A phase's effect is the difference of two proportions: the share of messaged customers who
converted less the share of control customers who did. Its 95% interval is Newcombe's hybrid
score interval (Newcombe 1998, method 10): each arm's Wilson score interval, combined. Unlike
the normal approximation (the one ``phase_uplift`` stores), it stays inside [-1, 1] and is
correct with zero counts and small arms.

Incremental conversions are the difference times the messaged customers (what the messages
added to the customers they reached); their interval is the difference's interval times the
same number. Summed over phases, the interval is recovered from the phases' intervals as
Newcombe's is from the Wilson ones (MOVER, Zou & Donner 2008): the point is the sum, and each
side's distance from it is the square root of the sum of the phases' squared distances on
that side, the phases treated as independent samples.

Money (``money``): a phase's incremental revenue is its incremental conversions times the
average revenue of a conversion in the phase (both groups' conversions pooled), and its range is
the conversions' range times the same average: the uncertainty is in how many conversions the
messages added, not in what one is worth. Profit is the same with each conversion's revenue
times its offer's ``margin`` (rules file, default 1), less the message cost (SMS segments x
price + emails x price, known exactly). Return on spend is incremental revenue / message cost,
its range the revenue's range / cost. Summed over phases as incremental conversions are.

The verdict (``verdict``): *too few customers to tell* when either arm has fewer than
``MIN_ARM`` customers, or when the smallest difference the comparison would detect 8 times in
10 (two-sided 5% level) is more than ``MAX_DETECTABLE`` (10 percentage points); otherwise
*effect* when the interval excludes zero, else *no measurable effect*.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

Z95 = 1.959963984540054  # two-sided 95%
Z80 = 0.8416212335729143  # one-sided 80% power
MIN_ARM = 30
MAX_DETECTABLE = 0.10

EFFECT = "effect"
NO_EFFECT = "no measurable effect"
TOO_FEW = "too few customers to tell"

RULES_IN_WORDS = (
    f"Each comparison is messaged customers against the control group (customers the rules "
    f"held back at random). The range is a 95% interval (Newcombe's score method): the "
    f"difference is likely to lie inside it. The verdict is <b>{EFFECT}</b> when the whole "
    f"range is above zero (or below it: messages then cost conversions), "
    f"<b>{NO_EFFECT}</b> when it includes zero, and <b>{TOO_FEW}</b> when either group has "
    f"fewer than {MIN_ARM} customers or when the groups are too small to notice a difference "
    f"of less than {MAX_DETECTABLE:.0%} points (the smallest difference they would show 8 times "
    f"in 10)."
)


def wilson(x: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson's score interval for x successes of n (n > 0)."""
    if n <= 0:
        raise ValueError("wilson: n must be positive")
    if not 0 <= x <= n:
        raise ValueError(f"wilson: x={x} is not within 0..n={n}")
    p = x / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe(x1: int, n1: int, x2: int, n2: int, z: float = Z95) -> tuple[float, float, float]:
    """p1 - p2 and its hybrid score interval (Newcombe 1998, method 10): (diff, low, high)."""
    l1, u1 = wilson(x1, n1, z)
    l2, u2 = wilson(x2, n2, z)
    p1, p2 = x1 / n1, x2 / n2
    d = p1 - p2
    low = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    high = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return d, max(-1.0, low), min(1.0, high)


def detectable(x1: int, n1: int, x2: int, n2: int) -> float:
    """The smallest difference two arms of n1 and n2 would detect 8 times in 10 (5% level).

    At the control arm's (2) rate, the rate a difference is measured from, smoothed by one
    success and one failure so that an arm with no conversions yet does not claim to detect
    anything. (At the pooled rate, a large true effect raised the rate it was judged at, and
    a control of 50 at 3% beside a messaged 13% was called "too few" every time.)
    """
    del x1  # the messaged arm's conversions do not change what the sizes can detect
    p = (x2 + 1) / (n2 + 2)
    return (Z95 + Z80) * math.sqrt(p * (1 - p) * (1 / n1 + 1 / n2))


@dataclass(frozen=True)
class Comparison:
    """One phase's messaged arm (1) against its control arm (2)."""

    treated: int
    treated_conversions: int
    control: int
    control_conversions: int
    diff: float | None = None
    low: float | None = None
    high: float | None = None
    detectable: float | None = None
    verdict: str = TOO_FEW
    reason: str = ""

    @property
    def treated_rate(self) -> float | None:
        return self.treated_conversions / self.treated if self.treated else None

    @property
    def control_rate(self) -> float | None:
        return self.control_conversions / self.control if self.control else None

    @property
    def detectable_words(self) -> str:
        """The minimum detectable effect for these sizes, in words ('' when not computed)."""
        if self.detectable is None:
            return ""
        return (f"with these group sizes only a difference of {self.detectable * 100:.1f} points "
                "or more would show (8 times in 10)")

    @property
    def incremental(self) -> tuple[float, float, float] | None:
        """Conversions the messages added, with the interval: (point, low, high)."""
        if self.diff is None or self.low is None or self.high is None:
            return None
        return self.diff * self.treated, self.low * self.treated, self.high * self.treated


def compare(treated: int, treated_conversions: int, control: int,
            control_conversions: int) -> Comparison:
    """The comparison of one phase, its interval and its verdict (module docstring)."""
    args = (treated, treated_conversions, control, control_conversions)
    if not treated or not control:
        empty = "no messaged customers" if not treated else "no control group"
        return Comparison(*args, verdict=TOO_FEW, reason=empty)
    d, low, high = newcombe(treated_conversions, treated, control_conversions, control)
    mde = detectable(treated_conversions, treated, control_conversions, control)
    fields = {"diff": d, "low": low, "high": high, "detectable": mde}
    if min(treated, control) < MIN_ARM:
        small = "control group" if control < treated else "messaged group"
        reason = f"the {small} has {min(treated, control):,} customers (fewer than {MIN_ARM})"
        return Comparison(*args, **fields, verdict=TOO_FEW, reason=reason)
    if mde > MAX_DETECTABLE:
        reason = (f"these groups would only notice a difference of {mde:.0%} points or more "
                  f"(more than {MAX_DETECTABLE:.0%})")
        return Comparison(*args, **fields, verdict=TOO_FEW, reason=reason)
    if low > 0 or high < 0:
        return Comparison(*args, **fields, verdict=EFFECT,
                          reason="the whole interval is " + ("above" if low > 0 else "below")
                          + " zero")
    return Comparison(*args, **fields, verdict=NO_EFFECT, reason="the interval includes zero")


@dataclass(frozen=True)
class Total:
    point: float
    low: float
    high: float
    verdict: str


Interval = tuple[float, float, float]  # (point, low, high)


def summed(parts: list[Interval]) -> Interval:
    """Independent estimates added: the point is the sum, each side's distance from it the
    square root of the summed squared distances on that side (MOVER, module docstring)."""
    point = sum(p for p, _, _ in parts)
    low = point - math.sqrt(sum((p - lo) ** 2 for p, lo, _ in parts))
    high = point + math.sqrt(sum((hi - p) ** 2 for p, _, hi in parts))
    return point, low, high


def total(comparisons: list[Comparison]) -> Total | None:
    """Incremental conversions summed over phases with the MOVER interval (module docstring).

    The verdict is *too few customers to tell* when every phase's is; otherwise from the
    summed interval.
    """
    parts = [c.incremental for c in comparisons if c.incremental is not None]
    if not parts:
        return None
    point, low, high = summed(parts)
    if all(c.verdict == TOO_FEW for c in comparisons):
        verdict = TOO_FEW
    else:
        verdict = EFFECT if low > 0 or high < 0 else NO_EFFECT
    return Total(point, low, high, verdict)


@dataclass(frozen=True)
class Money:
    """A phase's (or the total's) incremental revenue and profit, with ranges (module docstring).

    ``revenue`` and ``gross`` (revenue x margin) are (point, low, high) or None when no
    conversion was counted in either group; ``cost`` is what the messages cost.
    """

    cost: float
    revenue: Interval | None
    gross: Interval | None

    @property
    def profit(self) -> Interval | None:
        if self.gross is None:
            return None
        return tuple(v - self.cost for v in self.gross)  # type: ignore[return-value]

    @property
    def return_on_spend(self) -> Interval | None:
        if self.revenue is None or not self.cost:
            return None
        return tuple(v / self.cost for v in self.revenue)  # type: ignore[return-value]


def money(c: Comparison, revenue: float, margin_revenue: float, cost: float) -> Money:
    """Money of one phase: ``revenue`` and ``margin_revenue`` (each conversion's revenue times
    its offer's margin) summed over both groups' converted customers; ``cost`` of its messages.
    """
    conversions = c.treated_conversions + c.control_conversions
    inc = c.incremental
    if inc is None or not conversions:
        return Money(cost, None, None)
    per, per_margin = revenue / conversions, margin_revenue / conversions
    return Money(cost, tuple(v * per for v in inc), tuple(v * per_margin for v in inc))  # type: ignore[arg-type]


def money_total(parts: list[Money]) -> Money:
    """Money summed over phases: ranges as ``summed``; every phase's cost counts."""
    cost = sum(m.cost for m in parts)
    rev = [m.revenue for m in parts if m.revenue is not None]
    gross = [m.gross for m in parts if m.gross is not None]
    return Money(cost, summed(rev) if rev else None, summed(gross) if gross else None)
