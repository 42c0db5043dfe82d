"""How the simulated club answers messages: the response model and the responses it writes.

Every message that went out may cause a response with its phase's probability
(``ResponseModel``): the visit, purchase or membership is written into ``raw.*`` dated within the
phase's attribution window. Only customers who would not have converted in that window anyway
respond, so the effect is incremental by construction and known. Every message may also make
its recipient opt out, the more likely the more messages they got in the last 30 days.
``PolicyResult`` is the tally a policy's run keeps: messages, segments, opt-outs, caused
conversions and their revenue.
"""


from __future__ import annotations

import calendar
import hashlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from typing import Annotated, Any, Literal

import psycopg
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from lifecycle.planning.outbox import customer_zone
from lifecycle.planning.plan import PHASES_IN_ORDER
from lifecycle.rules.compiled import Rules
from lifecycle.settings import Settings

PRODUCT_MONTHS = {"gym_12m": 12, "gym_6m": 6, "gym_3m": 3, "gym_1m": 1}
PRODUCT_PRICE = {"gym_12m": 14400, "gym_6m": 8400, "gym_3m": 4800, "gym_1m": 1800}
ADDONS = (("solarium", 150), ("group_class", 250))
CROSS_SELLS = (("personal_training", 900), ("massage", 1200), ("spa", 1600))


Policy = Literal["lifecycle", "blast"]
BLAST_PHASE = "blast"


@dataclass
class PolicyResult:
    policy: Policy
    customers: int
    days: int
    first_day: date
    last_day: date
    messages: int = 0
    sms: int = 0
    sms_segments: int = 0
    email: int = 0
    calls: int = 0  # calls made (an outcome loaded, answered or not)
    messaged_customers: int = 0
    opt_outs: int = 0
    conversions: Counter = field(default_factory=Counter)  # phase -> caused conversions
    revenue: Counter = field(default_factory=Counter)  # phase -> their revenue
    measured: list[dict[str, Any]] = field(default_factory=list)  # phase_uplift, step 0
    seconds: float = 0.0
    seconds_dbt: float = 0.0

    def messages_per_customer_year(self) -> float:
        return self.messages / max(self.customers, 1) * 365 / max(self.days, 1)

    def as_dict(self, settings: Settings) -> dict[str, Any]:
        sms_cost = self.sms_segments * settings.sms_cost
        email_cost = self.email * settings.email_cost
        call_cost = self.calls * settings.call_cost
        return {
            "policy": self.policy,
            "customers": self.customers,
            "days": self.days,
            "first_day": self.first_day.isoformat(),
            "last_day": self.last_day.isoformat(),
            "messages": self.messages,
            "messages_per_customer_year": round(self.messages_per_customer_year(), 2),
            "messaged_customers": self.messaged_customers,
            "sms": self.sms,
            "sms_segments": self.sms_segments,
            "email": self.email,
            "calls": self.calls,
            "sms_cost": round(sms_cost, 2),
            "email_cost": round(email_cost, 2),
            "call_cost": round(call_cost, 2),
            "cost": round(sms_cost + email_cost + call_cost, 2),
            "currency": settings.currency,
            "opt_outs": self.opt_outs,
            "conversions": {p: self.conversions.get(p, 0) for p in PHASES_IN_ORDER},
            "revenue": {p: round(float(self.revenue.get(p, 0)), 2) for p in PHASES_IN_ORDER},
            "conversions_total": sum(self.conversions.values()),
            "revenue_total": round(float(sum(self.revenue.values())), 2),
            "measured_uplift": self.measured,
            "seconds": round(self.seconds, 1),
            "seconds_dbt": round(self.seconds_dbt, 1),
        }


def stable_uniform(*parts: object) -> float:
    """A uniform draw in [0, 1) fixed by its parts (seed, day, customer, what)."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


MODEL_FILE = Path(__file__).with_name("responses.yml")  # the shipped defaults, with sources
RESPONSE_PHASES = ("activation", "stimulation", "cross_sell", "retention", "return")
Rate = Annotated[float, Field(ge=0, le=1)]


class ResponseModel(BaseModel):
    """How simulated customers respond: ``responses.yml`` shipped beside this module (every
    default with the figure it comes from), or ``lifecycle simulate --model FILE``."""

    model_config = ConfigDict(extra="forbid")
    respond: dict[Literal["activation", "stimulation", "cross_sell", "retention", "return"],
                  Rate] = Field(
        description="Probability that a phase's message causes its conversion (of those who "
        "would not have converted anyway)",
    )
    blast_respond: float = Field(
        ge=0,
        le=1,
        description="Probability that a blast SMS makes a member due to renew (ending within "
        "45 days) or lapsed buy a membership; others have no use for the offer",
    )
    opt_out: float = Field(ge=0, le=1, description="Opt-out per message")
    annoyance: float = Field(
        ge=0, description="Each further message in the last 30 days multiplies opt-out by 1 + this"
    )
    max_lag_days: int = Field(ge=1, description="A response comes 1..this many days after")
    blast_per_month: tuple[int, int] = Field(
        description="Blast campaign days per month (low, high), both included"
    )
    sensitivity_multiple: float = Field(
        default=1.5, gt=0,
        description="The report's sensitivity line caps each lifecycle rate at this multiple "
        "of blast_respond",
    )
    sources: dict[str, str] = Field(
        default_factory=dict,
        description="Where each value comes from (a field, or a phase of respond): shown in "
        "the report beside the assumption",
    )

    # Assumptions, stated: by default neither idea gets an effect of its own (1.0), so a
    # simulation shows what the rules do, not what we hoped; set them to try a hypothesis.
    habit_timed_factor: float = Field(
        default=1.0,
        ge=0,
        description="Multiplies the response probability of a message due at the member's "
        "habit time (policy.send_time habit: send_at not at the window's start)",
    )
    next_best_factor: float = Field(
        default=1.0,
        ge=0,
        description="Multiplies the response probability of a look-alike offer "
        "(offer_source next_best); the purchase is then the offered service",
    )
    # The call channel: what the front desk's calls find (the simulated outcomes file).
    call_reached: float = Field(
        default=0.46, ge=0, le=1,
        description="Share of calls that reach the customer (reached, not interested, "
        "interested or booked)",
    )
    call_wrong_number: float = Field(
        default=0.2, ge=0, le=1,
        description="Share of calls that find a wrong number (the phone is then dead); the "
        "rest are not answered",
    )
    call_respond: float = Field(
        default=0.13, ge=0, le=1,
        description="Probability that a call that reached the customer causes the phase's "
        "conversion (instead of the phase's rate in respond)",
    )

    @model_validator(mode="after")
    def _call_shares(self) -> ResponseModel:
        if self.call_reached + self.call_wrong_number > 1:
            raise ValueError(
                f"call_reached ({self.call_reached}) + call_wrong_number "
                f"({self.call_wrong_number}) is more than 1: they are shares of the same calls")
        return self

    @field_validator("blast_per_month")
    @classmethod
    def _low_high(cls, v: tuple[int, int]) -> tuple[int, int]:
        if not 0 <= v[0] <= v[1] <= 31:
            raise ValueError(f"expected [low, high] with 0 <= low <= high <= 31, found {list(v)}")
        return v

    @field_validator("sources")
    @classmethod
    def _known_sources(cls, v: dict[str, str]) -> dict[str, str]:
        known = set(RESPONSE_PHASES) | (set(cls.model_fields) - {"respond", "sources"})
        unknown = sorted(set(v) - known)
        if unknown:
            raise ValueError(f"sources for unknown values: {', '.join(unknown)}; valid: "
                             f"{', '.join(sorted(known))}")
        return v


class ModelInvalid(ValueError):
    """A response model file with mistakes, each located (file:line:column) and explained."""

    def __init__(self, errors: list[Any]):
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))


def _shipped() -> dict[str, Any]:
    return yaml.safe_load(MODEL_FILE.read_text(encoding="utf-8"))


def default_response_model() -> ResponseModel:
    """The shipped model (``responses.yml``): every default with its source."""
    return ResponseModel.model_validate(_shipped())


def parse_response_model(text: str, name: str = "<model>") -> ResponseModel:
    """A model file's text over the shipped defaults: the keys it gives replace them (each
    phase of ``respond`` on its own), and a value it changes loses the shipped source unless
    the file gives its own. Every mistake at once, located in the file."""
    from pydantic import ValidationError

    from lifecycle.rules.errors import ROOT, RuleError, closest, problem_at
    from lifecycle.rules.yamldoc import compose_with_marks, locate_all, yaml_error

    try:
        doc = compose_with_marks(text)
    except yaml.YAMLError as exc:
        raise ModelInvalid([yaml_error(name, text, exc)]) from None
    data = doc.data if doc.data is not None else {}
    if doc.problems:
        raise ModelInvalid(locate_all(name, doc, doc.problems))
    fields = list(ResponseModel.model_fields)
    if not isinstance(data, dict):
        raise ModelInvalid([RuleError(name, 1, 1, ROOT, "expected a mapping with the keys "
                                      + ", ".join(fields), found=type(data).__name__)])
    merged = _shipped()
    sources = dict(merged.pop("sources", {}))
    for key, value in data.items():
        if key == "respond" and isinstance(value, dict):
            merged["respond"] = {**merged["respond"], **value}
            for phase in value:
                sources.pop(phase, None)
        elif key != "sources":
            merged[key] = value
            sources.pop(key, None)
    given = data.get("sources", {})
    merged["sources"] = {**sources, **given} if isinstance(given, dict) else given
    try:
        return ResponseModel.model_validate(merged)
    except ValidationError as exc:
        problems = []
        bounds = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=",
                  "less_than": "<"}
        for e in exc.errors():
            parts = tuple(p for p in e["loc"] if p != "[key]")
            key = parts[-1] if parts else ROOT
            typ, inp, ctx = e["type"], e.get("input"), e.get("ctx") or {}
            if typ == "extra_forbidden":
                problems.append(problem_at(parts, f"unknown field '{key}'", valid=", ".join(fields),
                                           suggestion=closest(str(key), fields), at_key=True))
            elif typ == "literal_error":
                problems.append(problem_at(parts, f"unknown phase '{inp}'",
                                           valid=", ".join(RESPONSE_PHASES),
                                           suggestion=closest(inp, RESPONSE_PHASES),
                                           at_key=True))
            elif typ in bounds:
                bound = next(iter(ctx.values()), "?")
                problems.append(problem_at(parts, f"'{key}' is out of range", found=inp,
                                           valid=f"{bounds[typ]} {bound}"))
            elif typ in ("float_type", "float_parsing", "int_type", "int_parsing",
                         "int_from_float"):
                whole = typ.startswith("int")
                problems.append(problem_at(parts, f"wrong type for '{key}'", found=inp,
                                           valid="a whole number" if whole else "a number"))
            elif typ in ("dict_type", "tuple_type", "list_type"):
                shape = "a mapping (key: value lines)" if typ == "dict_type" else "[low, high]"
                problems.append(problem_at(parts, f"wrong type for '{key}'", found=inp,
                                           valid=shape))
            elif typ == "missing":
                problems.append(problem_at(parts, f"required field '{key}' is missing"))
            else:
                problems.append(problem_at(parts, str(ctx.get("error", e["msg"])), found=inp))
        raise ModelInvalid(locate_all(name, doc, problems)) from None


def load_response_model(path: Path | None) -> ResponseModel:
    """The shipped model, or a model file over it (``parse_response_model``)."""
    if path is None:
        return default_response_model()
    return parse_response_model(path.read_text(encoding="utf-8"), str(path))


def sensitivity(conversions: dict[str, float], revenue: dict[str, float],
                model: dict[str, Any]) -> dict[str, Any] | None:
    """What a lifecycle run's caused conversions and revenue become if every phase's rate were
    at most ``sensitivity_multiple`` x ``blast_respond``: each phase's figures times the capped
    rate / the assumed rate. Caused conversions are the rate times the customers who could
    respond, so this is their expected value at the lower rate, without a second run (which
    would differ a little: fewer responses change the later days' audiences)."""
    rates, blast = model.get("respond") or {}, model.get("blast_respond")
    multiple = model.get("sensitivity_multiple", 1.5)
    if not rates or blast is None:
        return None
    cap = multiple * blast
    factor = {p: (min(r, cap) / r if r else 1.0) for p, r in rates.items()}
    return {
        "multiple": multiple, "rate": cap,
        "conversions": sum(n * factor.get(p, 1.0) for p, n in conversions.items()),
        "revenue": sum(v * factor.get(p, 1.0) for p, v in revenue.items()),
        "factor": factor,
    }


def _latest_memberships(conn: psycopg.Connection, ids: list[str], day: date) -> dict[str, tuple]:
    """customer -> (product, ends_on) of the latest membership bought by ``day``."""
    rows = conn.execute(
        """
        select distinct on (customer_id) customer_id, product, ends_on
        from raw.memberships
        where customer_id = any(%s) and status <> 'cancelled' and purchased_on <= %s
        order by customer_id, purchased_on desc, membership_id desc
        """,
        (ids, day),
    ).fetchall()
    return {c: (p, e) for c, p, e in rows}


def _converts_anyway(
    conn: psycopg.Connection, phase: str, ids: list[str], day: date, until: dict[str, date]
) -> set[str]:
    """Customers whose own (generated) behaviour converts them in (day, until[customer]]."""
    if not ids:
        return set()
    ends = [until[c] for c in ids]
    if phase == "activation":
        query = (
            "select distinct t.c from unnest(%s::text[], %s::date[]) t(c, e) join raw.visits v "
            "on v.customer_id = t.c and v.visited_at::date > %s and v.visited_at::date <= t.e"
        )
    elif phase in ("stimulation", "cross_sell"):
        category = "addon" if phase == "stimulation" else "cross_sell"
        query = (
            "select distinct t.c from unnest(%s::text[], %s::date[]) t(c, e) join raw.purchases p "
            "on p.customer_id = t.c and p.purchased_at::date > %s and p.purchased_at::date <= t.e "
            f"join raw.services s on s.service = p.service and s.category = '{category}'"
        )
    else:
        query = (
            "select distinct t.c from unnest(%s::text[], %s::date[]) t(c, e) "
            "join raw.memberships m on m.customer_id = t.c and m.status <> 'cancelled' "
            "and m.purchased_on > %s and m.purchased_on <= t.e"
        )
    return {r[0] for r in conn.execute(query, (ids, ends, day))}


@dataclass
class _Responses:
    visits: list[tuple] = field(default_factory=list)
    purchases: list[tuple] = field(default_factory=list)
    memberships: list[tuple] = field(default_factory=list)
    suppressions: list[tuple] = field(default_factory=list)


def respond(
    conn: psycopg.Connection,
    day: date,
    rules: Rules,
    model: ResponseModel,
    seed: int,
    result: PolicyResult,
    settings: Settings,
) -> None:
    """Draw the responses and opt-outs to the day's sent messages and write them into raw/ops."""
    rows = conn.execute(
        "select customer_id, phase, channel, send_at, offer_code, offer_source from ops.outbox "
        "where plan_date = %s and status = 'sent' order by customer_id",
        (day,),
    ).fetchall()
    if not rows:
        return
    sent = [(c, phase, channel) for c, phase, channel, _, _, _ in rows]
    ids = [c for c, _, _ in sent]
    called = {c for c, _, channel in sent if channel == "call"}  # and reached
    zones = dict(
        conn.execute(
            "select customer_id, timezone from analytics.stg_club__customers "
            "where customer_id = any(%s)",
            (ids,),
        ).fetchall()
    )
    latest = _latest_memberships(conn, ids, day)
    # customer -> (probability factor, the offered service when it is a look-alike offer)
    window_start = rules.policy.send_window.start
    boost: dict[str, tuple[float, str | None]] = {}
    for c, _, _, send_at, offer_code, offer_source in rows:
        factor = 1.0
        local = send_at.astimezone(customer_zone(zones.get(c), settings.club_timezone))
        if local.time() != window_start:
            factor *= model.habit_timed_factor
        if offer_source == "next_best":
            factor *= model.next_best_factor
        boost[c] = (factor, offer_code if offer_source == "next_best" else None)
    recent = Counter(
        dict(
            conn.execute(
                "select customer_id, count(*) from ops.outbox where customer_id = any(%s) "
                "and status = 'sent' and plan_date > %s and plan_date <= %s group by 1",
                (ids, day - timedelta(days=30), day),
            ).fetchall()
        )
    )
    out = _Responses()
    by_phase: dict[str, list[str]] = defaultdict(list)
    for customer_id, phase, channel in sent:
        n30 = max(recent.get(customer_id, 1), 1)
        p_out = min(1.0, model.opt_out * (1 + model.annoyance * (n30 - 1)))
        if stable_uniform(seed, day, customer_id, "opt_out") < p_out:
            out.suppressions.append((customer_id, channel))
        if phase == BLAST_PHASE:
            current = latest.get(customer_id)
            if current is None:
                continue
            to_end = (current[1] - day).days
            if 0 <= to_end <= 45:
                by_phase["retention"].append(customer_id)
            elif to_end < 0:
                by_phase["return"].append(customer_id)
        else:
            by_phase[phase].append(customer_id)
    windows = {p.name: p.phase for p in rules.phases}
    for phase, customers in by_phase.items():
        if result.policy == "blast":
            probability = model.blast_respond
            days = 30 if phase == "return" else None
        else:
            probability = model.respond.get(phase, 0.0)
            days = windows[phase].conversion_days() if phase in windows else 30
        grace = windows[phase].conversion.grace_days if phase in windows else 7
        until: dict[str, date] = {}
        for c in customers:
            if days is not None:
                until[c] = day + timedelta(days=days)
            elif c in latest:
                until[c] = latest[c][1] + timedelta(days=grace)
        customers = [c for c in customers if c in until and until[c] > day]
        anyway = _converts_anyway(conn, phase, customers, day, until)
        for c in customers:
            factor, offered = boost.get(c, (1.0, None))
            p = model.call_respond if c in called else probability
            if c in anyway or stable_uniform(seed, day, c, phase, "respond") >= min(
                1.0, p * factor
            ):
                continue
            span = (until[c] - day).days
            if phase == "retention":
                span = min(span, max((latest[c][1] - day).days, 1))
            lag = 1 + int(stable_uniform(seed, day, c, "lag") * min(model.max_lag_days, span))
            on = day + timedelta(days=lag)
            tz = customer_zone(zones.get(c), settings.club_timezone)
            at = datetime.combine(on, dtime(18, 0), tzinfo=tz)
            rid = f"sim-{day.isoformat()}-{phase}-{c}"
            amount: float
            if phase == "activation":
                out.visits.append((rid, c, at))
                amount = 0.0
            elif phase in ("stimulation", "cross_sell"):
                options = ADDONS if phase == "stimulation" else CROSS_SELLS
                service, amount = options[int(stable_uniform(seed, c, day, "svc") * len(options))]
                prices = dict(options)
                if offered in prices:  # a look-alike offer is bought as offered
                    service, amount = offered, prices[offered]
                out.purchases.append((rid, c, service, at, amount))
            else:
                product = latest[c][0] if c in latest else "gym_1m"
                product = product if product in PRODUCT_MONTHS else "gym_1m"
                starts = latest[c][1] + timedelta(days=1) if phase == "retention" else on
                starts = max(starts, on)
                ends = _add_months(starts, PRODUCT_MONTHS[product]) - timedelta(days=1)
                amount = float(PRODUCT_PRICE[product])
                out.memberships.append((rid, c, product, on, starts, ends, amount, "active"))
            result.conversions[phase] += 1
            result.revenue[phase] += amount
    _write_responses(conn, out)


def _add_months(d: date, months: int) -> date:
    y, m = divmod(d.month - 1 + months, 12)
    year, month = d.year + y, m + 1
    return date(year, month, min(d.day, calendar.monthrange(year, month)[1]))


def _write_responses(conn: psycopg.Connection, out: _Responses) -> None:
    with conn.cursor() as cur:
        if out.visits:
            with cur.copy("copy raw.visits (visit_id, customer_id, visited_at) from stdin") as cp:
                for row in out.visits:
                    cp.write_row(row)
        if out.purchases:
            with cur.copy(
                "copy raw.purchases (purchase_id, customer_id, service, purchased_at, amount) "
                "from stdin"
            ) as cp:
                for row in out.purchases:
                    cp.write_row(row)
        if out.memberships:
            with cur.copy(
                "copy raw.memberships (membership_id, customer_id, product, purchased_on, "
                "starts_on, ends_on, price, status) from stdin"
            ) as cp:
                for row in out.memberships:
                    cp.write_row(row)
        for customer_id, channel in out.suppressions:
            cur.execute(
                "insert into ops.suppressions (customer_id, channel, reason, source) "
                "values (%s, %s, 'opted_out', 'simulation') on conflict do nothing",
                (customer_id, channel),
            )
    conn.commit()


def call_outcome(model: ResponseModel, seed: int, day: date, call_id: int) -> str:
    """What the desk finds when it makes a call: reached, wrong_number or no_answer, drawn at
    the model's call_reached and call_wrong_number shares."""
    u = stable_uniform(seed, day, call_id, "call")
    if u < model.call_reached:
        return "reached"
    if u < model.call_reached + model.call_wrong_number:
        return "wrong_number"
    return "no_answer"
