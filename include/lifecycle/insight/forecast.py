"""Next month's profit per phase, from what this club measured, beside the article's rule of thumb.

A phase's forecast (``phase_forecast``) is

    messaged   = audience x live share x (1 - control group share)
    conversions added = messaged x uplift                  (uplift: the report's comparison)
    profit     = conversions added x revenue x margin per conversion - messaged x cost per customer

The audience is the customers who entered the phase in the 30 days ending on the report's last
day (``entrants``): the rules file's own selection, recorded by planning as an outbox row or a
skip, a customer counted when their run of consecutive planning days for a step starts in those
days. A month's entrants are the next month's best estimate for every phase alike: the
membership timeline alone would say who reaches day 20 or the last 45 days, but not who will
have visited four times in 30 days or bought nothing, which the rules ask too.

The live share (``live_channels``) is the share of them with at least one of the phase's
channels usable as planning would find it: a valid address, consent, no opt-out or other
suppression, and no phone or email in ``ops.dead_contacts``. The uplift's interval carries
through: profit low and high are the profit at the interval's ends (the audience, the value of a
conversion and the cost are taken as known).

The rule of thumb (``RuleOfThumb``): P = X x 0.7 x (0.07 Y + 0.02 Z), X customers in the base,
0.7 of their contacts alive, 7% of those buy a service (margin Y each) and 2% buy again (margin
Z). ``measured_rule`` puts this club's live share and added rates in place of the three shares.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import psycopg

from lifecycle.contacts import CHANNEL_KIND
from lifecycle.insight import uplift

DAYS = 30  # the audience is counted over the last DAYS days and forecast for the next DAYS
# the article's shares: live contacts, customers who buy a service, customers who buy again
ARTICLE_LIVE, ARTICLE_SERVICE, ARTICLE_SALE = 0.7, 0.07, 0.02
# phases by what their conversion sells (rules.models.CONVERSION_EVENTS)
SERVICE_PHASES = ("stimulation", "cross_sell")
SALE_PHASES = ("retention", "return")


@dataclass(frozen=True)
class PhaseForecast:
    """One phase's next-month profit (module docstring)."""

    phase: str
    audience: int  # customers who entered the phase in the last DAYS days
    live: int  # of them, with a live contact on one of the phase's channels
    control_share: float  # held back next month too
    cmp: uplift.Comparison  # the period's measured comparison
    value_per_conversion: float | None  # revenue x margin of one conversion; None: none counted
    cost_per_customer: float  # message cost per messaged customer

    @property
    def live_share(self) -> float | None:
        return self.live / self.audience if self.audience else None

    @property
    def messaged(self) -> float:
        return self.live * (1 - self.control_share)

    @property
    def cost(self) -> float:
        return self.messaged * self.cost_per_customer

    @property
    def conversions(self) -> uplift.Interval | None:
        """Conversions the messages would add: (point, low, high); None when not measured."""
        if self.cmp.diff is None or self.cmp.low is None or self.cmp.high is None:
            return None
        return (self.messaged * self.cmp.diff, self.messaged * self.cmp.low,
                self.messaged * self.cmp.high)

    @property
    def profit(self) -> uplift.Interval | None:
        if self.conversions is None or self.value_per_conversion is None:
            return None
        return tuple(n * self.value_per_conversion - self.cost  # type: ignore[return-value]
                     for n in self.conversions)

    @property
    def words(self) -> str:
        """What the figure means for a manager, from the verdict and the range."""
        p = self.profit
        if p is None:
            if self.conversions is None:
                return "Not measured yet: no messaged and control customers to compare."
            return "No conversion was counted in either group yet, so a conversion has no value."
        point, low, high = p
        if not self.value_per_conversion:
            return "Its conversions bring no revenue of their own: the figure is the cost."
        if self.cmp.verdict == uplift.TOO_FEW:
            return "Too few customers were measured: read the figure as a guess."
        if self.cmp.verdict == uplift.NO_EFFECT:
            return ("The range includes zero: the messages may add nothing, and then their cost "
                    "makes a loss." if low < 0 else "The range includes zero.")
        if low < 0:
            return "The messages add conversions, but at the low end they do not pay their cost."
        if high < 0:
            return "Expected to lose money."
        return "Expected to pay: the whole range is a profit."


def phase_forecast(phase: str, audience: int, live: int, control_share: float,
                   cmp: uplift.Comparison, margin_revenue: float, cost: float,
                   customers_messaged: int) -> PhaseForecast:
    """A phase's forecast from the period's measurements.

    ``margin_revenue`` (each conversion's revenue x its offer's margin) is summed over both
    groups' converted customers, as ``uplift.money`` takes it; ``cost`` is what the period's
    messages of the phase cost, sent to ``customers_messaged`` customers.
    """
    conversions = cmp.treated_conversions + cmp.control_conversions
    value = margin_revenue / conversions if conversions else None
    per_customer = cost / customers_messaged if customers_messaged else 0.0
    return PhaseForecast(phase, audience, live, control_share, cmp, value, per_customer)


def total_profit(forecasts: Iterable[PhaseForecast]) -> uplift.Interval | None:
    """The phases' profits summed, their ranges combined as the report's totals are (MOVER)."""
    parts = [f.profit for f in forecasts if f.profit is not None]
    return uplift.summed(parts) if parts else None


@dataclass(frozen=True)
class RuleOfThumb:
    """P = X x live x (service x Y + sale x Z); Y and Z None when the club has no such sale."""

    base: int  # X
    live: float | None
    service: float | None
    sale: float | None
    service_margin: float | None  # Y
    sale_margin: float | None  # Z

    @property
    def profit(self) -> float | None:
        shares = (self.live, self.service, self.sale, self.service_margin, self.sale_margin)
        if any(v is None for v in shares):
            return None
        return self.base * self.live * (self.service * self.service_margin  # type: ignore[operator]
                                        + self.sale * self.sale_margin)  # type: ignore[operator]

    def filled(self, currency: str) -> str:
        """The formula with the numbers put in: 'P = 1,000 × 70% × (7% × 200 + ...) = ...'."""
        def share(v: float | None) -> str:
            return "?" if v is None else f"{v * 100:.1f}".removesuffix(".0") + "%"

        def money(v: float | None) -> str:
            return "?" if v is None else f"{v:,.0f}"

        result = "not known" if self.profit is None else f"{self.profit:,.0f} {currency}"
        return (f"P = {self.base:,} × {share(self.live)} × ({share(self.service)} × "
                f"{money(self.service_margin)} + {share(self.sale)} × {money(self.sale_margin)})"
                f" = {result}")


def article_rule(base: int, service_margin: float | None,
                 sale_margin: float | None) -> RuleOfThumb:
    """The article's rule of thumb for this club's base and margins."""
    return RuleOfThumb(base, ARTICLE_LIVE, ARTICLE_SERVICE, ARTICLE_SALE, service_margin,
                       sale_margin)


def added_rate(comparisons: Iterable[uplift.Comparison]) -> float | None:
    """The conversions the messages added per messaged customer, pooled over comparisons."""
    parts = [(c.incremental[0], c.treated) for c in comparisons if c.incremental is not None]
    messaged = sum(n for _, n in parts)
    return sum(x for x, _ in parts) / messaged if messaged else None


def measured_rule(base: int, live_share: float | None, by_phase: dict[str, uplift.Comparison],
                  service_margin: float | None, sale_margin: float | None) -> RuleOfThumb:
    """The same formula with this club's live share and the rates its messages added: of the
    service phases (a service bought) and of the membership phases (a membership bought)."""
    return RuleOfThumb(
        base, live_share,
        added_rate(by_phase[p] for p in SERVICE_PHASES if p in by_phase),
        added_rate(by_phase[p] for p in SALE_PHASES if p in by_phase),
        service_margin, sale_margin,
    )


# --------------------------------------------------------------------------- what it reads


def entrants(conn: psycopg.Connection, last: date) -> dict[str, list[str]]:
    """phase -> customers who entered it in the DAYS days ending on ``last``: an outbox row
    or a skip (any reason: the rules chose them) for a step on a day, and none for that step
    on the day before."""
    first = last - timedelta(days=DAYS - 1)
    # Each record's previous day for the same step, by a window over one sort (the text keys
    # in byte order): an anti-join of the records on themselves sorted them twice in the
    # database's collation (0.56 s against 0.19 s for a month of a 10k club's records).
    rows = conn.execute(
        """
        with records as (
            select plan_date, customer_id collate "C" as customer_id, phase collate "C" as phase,
                   step
            from ops.outbox where plan_date between %(before)s and %(l)s
            union all
            select plan_date, customer_id collate "C", phase collate "C", step
            from ops.skips where plan_date between %(before)s and %(l)s
        ), marked as (
            select phase, customer_id, plan_date,
                   lag(plan_date) over (partition by customer_id, phase, step
                                        order by plan_date) as prev_day
            from records
        )
        select distinct phase, customer_id from marked
        where plan_date >= %(f)s
          -- the step's record before it is not of the day before (nor a twin of this day's)
          and prev_day is distinct from plan_date - 1 and prev_day is distinct from plan_date
        order by 1, 2
        """,
        {"before": first - timedelta(days=1), "f": first, "l": last},
    ).fetchall()
    out: dict[str, list[str]] = {}
    for phase, customer_id in rows:
        out.setdefault(phase, []).append(customer_id)
    return out


def live_channels(conn: psycopg.Connection, schema: str) -> dict[str, set[str]]:
    """customer -> the channels planning could use for them as of the last build (every
    customer of ``customer_facts``): a valid address with consent (a call needs a valid phone),
    not suppressed, not dead (lifecycle.contacts)."""
    from lifecycle.planning.audience import load_suppressions

    rows = conn.execute(
        "select customer_id, phone, email, sms_contactable, email_contactable, phone_valid "
        f'from "{schema}".customer_facts').fetchall()
    usable = {cid: {ch for ch, ok in (("sms", sms), ("email", email), ("call", phone_ok)) if ok}
              for cid, _, _, sms, email, phone_ok in rows}
    suppressed = load_suppressions(
        conn, list(usable), {cid: phone for cid, phone, *_ in rows if phone},
        {cid: email for cid, _, email, *_ in rows if email})
    return {cid: {ch for ch in chans if (cid, ch) not in suppressed}
            for cid, chans in usable.items()}


def live_count(customers: list[str], channels: Iterable[str],
               live: dict[str, set[str]]) -> int:
    """How many of ``customers`` have a live contact on one of ``channels``."""
    wanted = set(channels)
    return sum(1 for c in customers if live.get(c, set()) & wanted)


def sale_values(conn: psycopg.Connection, last: date) -> tuple[float | None, float | None]:
    """The average revenue of a service sale and of a membership sold in the year to ``last``
    (the club's own data): Y and Z before their margins."""
    since = last - timedelta(days=364)
    service = conn.execute(
        "select avg(amount) from raw.purchases where purchased_at::date between %s and %s",
        (since, last)).fetchone()[0]
    sale = conn.execute(
        "select avg(price) from raw.memberships where status <> 'cancelled' "
        "and purchased_on between %s and %s", (since, last)).fetchone()[0]
    return (None if service is None else float(service), None if sale is None else float(sale))


def lowest_margin(margins: dict[str, float], phases: Iterable[str]) -> float | None:
    """The lowest offer margin of ``phases`` in the report's margins ('phase|step[|variant]')."""
    wanted = set(phases)
    found = [m for key, m in margins.items() if key.split("|", 1)[0] in wanted]
    return min(found) if found else None


def channels_of(rules: Any) -> dict[str, list[str]]:
    """phase -> its channels in the rules file; every channel for a phase it does not hold."""
    return {p.name: list(p.phase.channels) for p in (rules.phases if rules is not None else [])}


def next_month(conn: psycopg.Connection, schema: str, last: date, phases: list[dict[str, Any]],
               margins: dict[str, float], rules: Any) -> dict[str, Any] | None:
    """The report's "Next month" section: a forecast per phase of ``phases`` (the report's
    rows: ``phase``, ``cmp``, ``margin_revenue``, ``cost``, ``sent``), their total,
    and the rule of thumb, article's and measured. None when customer_facts is not built."""
    if conn.execute("select to_regclass(%s)", (f'"{schema}".customer_facts',)).fetchone()[0] \
            is None:
        return None
    entered = entrants(conn, last)
    live = live_channels(conn, schema)
    chans = channels_of(rules)
    control = rules.model.policy.control_group.percent / 100 if rules is not None else 0.0
    forecasts = []
    for r in phases:
        ids = entered.get(r["phase"], [])
        alive = live_count(ids, chans.get(r["phase"], CHANNEL_KIND), live)
        forecasts.append(phase_forecast(
            r["phase"], len(ids), alive, control, r["cmp"], r["margin_revenue"],
            r["cost"], r["sent"]["customers"]))
    on_record = conn.execute(
        "select count(*) from raw.customers "
        "where coalesce(phone, '') <> '' or coalesce(email, '') <> ''").fetchone()[0]
    # the base is live on the channels the rules use (every channel without a rules file)
    used = {ch for names in chans.values() for ch in names} or set(CHANNEL_KIND)
    alive_base = sum(1 for c in live.values() if c & used)
    service_value, sale_value = sale_values(conn, last)
    y_margin, z_margin = lowest_margin(margins, SERVICE_PHASES), lowest_margin(margins, SALE_PHASES)
    y = None if service_value is None else service_value * (1.0 if y_margin is None else y_margin)
    z = None if sale_value is None else sale_value * (1.0 if z_margin is None else z_margin)
    return {
        "first": last + timedelta(days=1), "last": last + timedelta(days=DAYS),
        "since": last - timedelta(days=DAYS - 1), "days": DAYS,
        "phases": forecasts, "total": total_profit(forecasts), "control_share": control,
        "article": article_rule(on_record, y, z),
        "measured": measured_rule(on_record, alive_base / on_record if on_record else None,
                                  {f.phase: f.cmp for f in forecasts}, y, z),
        "service_value": service_value, "sale_value": sale_value,
        "service_margin": 1.0 if y_margin is None else y_margin,
        "sale_margin": 1.0 if z_margin is None else z_margin,
    }
