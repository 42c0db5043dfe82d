"""The rules file's structure as pydantic models: policy, phases, steps, offers, templates.

The models check shapes and types (``extra="forbid"``, strict); what needs the whole document
(conditions, templates, priorities) is checked in ``lifecycle.rules.checks``.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    WithJsonSchema,
    field_validator,
)

PHASE_NAMES = ("activation", "stimulation", "cross_sell", "retention", "return")
CHANNELS = ("sms", "email", "call")
SUPPRESSION_REASONS = ("opted_out", "hard_bounce", "spam_complaint", "manual")
DEFAULT_VARIANT = "A"


# --------------------------------------------------------------------------- models

_STRICT = ConfigDict(extra="forbid", strict=True)

# Conditions are checked by compile_condition (better errors than a union of models); for
# editors the JSON Schema describes them with a recursive definition (see rules_json_schema).
CONDITION_MARK = "x-lifecycle-condition"  # replaced by a $ref in rules_json_schema
Condition = Annotated[Any, WithJsonSchema({CONDITION_MARK: True})]
_TIME_SCHEMA = WithJsonSchema({"type": "string", "pattern": r"^\d{1,2}:\d{2}$"})


class FrequencyCap(BaseModel):
    """At most `max` messages in any `days` consecutive days (the planning day included)."""

    model_config = _STRICT
    days: int = Field(ge=1, le=365, description="Length of the rolling window in days")
    max: int = Field(ge=0, description="Messages allowed in the window")


def _default_caps() -> list[FrequencyCap]:
    return [FrequencyCap(days=7, max=2), FrequencyCap(days=30, max=4)]


class ChannelCaps(BaseModel):
    """Rolling caps counted per channel (in addition to the overall `frequency_caps`)."""

    model_config = _STRICT
    sms: list[FrequencyCap] = Field(default_factory=_default_caps)
    email: list[FrequencyCap] = Field(default_factory=_default_caps)
    call: list[FrequencyCap] = Field(
        default_factory=lambda: [FrequencyCap(days=30, max=1)],
        description="Calls (default: at most 1 in 30 days)",
    )


class SendWindow(BaseModel):
    """Local time of the customer; messages wait until the window opens and never go after."""

    model_config = _STRICT
    start: Annotated[dt.time, _TIME_SCHEMA] = Field(
        default=dt.time(10, 0), description="Opens, like '10:00'"
    )
    end: Annotated[dt.time, _TIME_SCHEMA] = Field(
        default=dt.time(20, 0), description="Closes, like '20:00'"
    )

    @field_validator("start", "end", mode="before")
    @classmethod
    def _hhmm(cls, v: Any) -> Any:
        if isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 24 * 60:
            return dt.time(v // 60, v % 60)  # YAML 1.1 reads 10:00 unquoted as sexagesimal 600
        if isinstance(v, str):
            m = re.fullmatch(r"(\d{1,2}):(\d{2})", v)
            if not m or int(m.group(1)) > 23 or int(m.group(2)) > 59:
                raise ValueError(f"expected a time like '10:00', found '{v}'")
            return dt.time(int(m.group(1)), int(m.group(2)))
        return v


class ControlGroup(BaseModel):
    """Customers in the control group receive nothing, so the effect can be measured."""

    model_config = _STRICT
    percent: float = Field(default=10, ge=0, le=100, description="Share of customers, 0-100")
    salt: str = Field(
        default="lifecycle-control-v1",
        min_length=1,
        description="Changing it reshuffles who is in the control group",
    )


class VolumeGuard(BaseModel):
    """Refuse a day whose planned volume looks like a bad data load rather than a plan."""

    model_config = _STRICT
    max_messages: int | None = Field(
        default=5000,
        ge=1,
        description="Never more messages than this in one day (null = no absolute cap)",
    )
    max_ratio_to_median: float | None = Field(
        default=3.0,
        gt=1,
        description="Nor more than this times the median of the previous median_days days "
        "(null = no ratio check)",
    )
    median_days: int = Field(default=7, ge=1, le=90, description="Days the median looks back")
    min_history_days: int = Field(
        default=3, ge=1, description="The ratio check needs at least this many planned days"
    )
    ratio_floor: int = Field(
        default=100,
        ge=0,
        description="A day of at most this many messages never trips the ratio check",
    )


class SendTime(BaseModel):
    """When inside the send window a message is due: the window's start (the default), or a
    little before the member's usual visit time (customer_send_hour)."""

    model_config = _STRICT
    mode: Literal["window_start", "habit"] = Field(
        default="window_start",
        description="window_start: when the window opens; habit: lead_minutes before the "
        "member's usual local visit time, kept inside the window",
    )
    lead_minutes: int = Field(
        default=90, ge=0, le=720, description="habit: minutes before the usual visit time"
    )
    min_visits: int = Field(
        default=5,
        ge=1,
        description="habit: fewer visits in the lookback than this -> the window start",
    )
    lookback_weeks: int = Field(
        default=8, ge=1, le=52, description="habit: weeks of visits the usual time is read from"
    )


class NextBestOffer(BaseModel):
    """Look-alikes: regulars with the same membership product, tenure band and visit band."""

    model_config = _STRICT
    regular_min_visits_30d: int = Field(
        default=4, ge=1, description="A regular visited at least this often in the last 30 days"
    )
    tenure_band_days: int = Field(
        default=180, ge=1, description="Tenure bands this many days wide (same band = similar)"
    )
    visits_band_30d: int = Field(
        default=4, ge=1, description="Visit bands of this many visits in 30 days"
    )
    min_lookalikes: int = Field(
        default=5, ge=1, description="Fewer look-alikes than this -> no ranking (the fallback)"
    )
    min_share: float = Field(
        default=0.1,
        ge=0,
        le=1,
        description="A service bought by a smaller share of the look-alikes is not offered",
    )


class Calls(BaseModel):
    """The front desk's or call centre's daily capacity for the `call` channel."""

    model_config = _STRICT
    capacity_per_day: int = Field(
        default=30,
        ge=0,
        description="Calls a club can make in a day (each club: clubs are customers' club_id); "
        "beyond it a call candidate tries the phase's next channel (skip call_capacity)",
    )
    per_club: dict[Annotated[str, Field(min_length=1)], Annotated[int, Field(ge=0)]] = Field(
        default_factory=dict,
        description="Club id -> its own daily capacity, overriding capacity_per_day",
    )
    max_attempts: int = Field(
        default=3,
        ge=1,
        le=10,
        description="Calls of one step to one customer in all: a 'no answer' is called again on "
        "a later day of the step's window until this many attempts were made",
    )

    def capacity(self, club_id: str | None) -> int:
        """The club's daily call capacity."""
        return self.per_club.get(club_id or "", self.capacity_per_day)


class Policy(BaseModel):
    """Rules for all phases together."""

    model_config = _STRICT
    max_messages_per_day: Literal[1] = Field(
        default=1, description="Lifecycle messages per customer per day (only 1 is supported)"
    )
    frequency_caps: list[FrequencyCap] = Field(
        default_factory=_default_caps, description="Rolling caps over all channels together"
    )
    channel_caps: ChannelCaps = Field(default_factory=ChannelCaps)
    send_window: SendWindow = Field(default_factory=SendWindow)
    control_group: ControlGroup = Field(default_factory=ControlGroup)
    variant_salt: str = Field(
        default="lifecycle-ab-v1",
        min_length=1,
        description="Salt of the A/B variant assignment; changing it reshuffles variants",
    )
    volume_guard: VolumeGuard = Field(default_factory=VolumeGuard)
    send_time: SendTime = Field(
        default_factory=SendTime,
        description="When in the send window a message goes out: window_start or habit",
    )
    next_best_offer: NextBestOffer = Field(
        default_factory=NextBestOffer,
        description="Who counts as a look-alike for offers `from: next_best_offer`",
    )
    keep_alive: KeepAlive | None = Field(
        default=None,
        description="A yearly low-key message to customers nobody has reached (none: off)",
    )
    calls: Calls = Field(
        default_factory=Calls,
        description="The call channel: each club's daily capacity and attempts per call",
    )


class EmailTemplate(BaseModel):
    model_config = _STRICT
    subject: str = Field(min_length=1, description="Jinja template of the subject line")
    body: str = Field(min_length=1, description="Jinja template of the body")


class Templates(BaseModel):
    """One template per channel the phase lists."""

    model_config = _STRICT
    sms: str | None = Field(default=None, description="Jinja template of the SMS text")
    email: EmailTemplate | None = None
    call: str | None = Field(
        default=None,
        description="Jinja template of the call's one-line script (what the caller says), shown "
        "on the call list",
    )


SERVICE_CODE = r"^[a-z0-9_]+$"


class CatalogEntry(BaseModel):
    """One service a next-best offer may propose: its title and optional fields (an Offer
    without its code: the catalog's key is the code)."""

    model_config = ConfigDict(extra="allow", strict=True)
    title: str = Field(min_length=1, description="Shown to the customer as {{ offer.title }}")
    margin: float = Field(
        default=1.0,
        gt=0,
        le=1,
        description="Share of the offer's revenue the club keeps (0 < margin <= 1; 0.35 = 35%); "
        "the report's profit is incremental revenue x margin - message cost; of a next-best "
        "offer's equal ranks the higher margin is offered. Default 1 (100%)",
    )


class Offer(CatalogEntry):
    """What the message offers; extra fields (price, valid_until...) are usable in templates."""

    code: str = Field(
        min_length=1, pattern=SERVICE_CODE, description="Short id: lowercase, digits, _"
    )


NEXT_BEST_OFFER = "next_best_offer"


class DynamicOffer(BaseModel):
    """An offer chosen per member: the best-ranked service of customer_next_best_offer that
    the catalog lists, else the fallback."""

    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)
    source: Literal["next_best_offer"] = Field(
        alias="from", description="Where the member's offer comes from: next_best_offer"
    )
    catalog: dict[Annotated[str, Field(pattern=SERVICE_CODE)], CatalogEntry] = Field(
        min_length=1, description="Service code (as in the club's services) -> its offer"
    )
    fallback: Offer = Field(
        description="The offer of members without a next-best service in the catalog"
    )

    @property
    def margin(self) -> float:
        """The margin the report counts for this step: the lowest of the catalog's and the
        fallback's (which offer a conversion followed is not known per conversion)."""
        return min([e.margin for e in self.catalog.values()] + [self.fallback.margin])

    def choices(self) -> list[dict[str, Any]]:
        """Every offer a member may see (as templates see it), the fallback last."""
        out = [
            {**entry.model_dump(), "code": code, "source": "next_best"}
            for code, entry in self.catalog.items()
        ]
        out.append({**self.fallback.model_dump(), "source": "fallback"})
        return out

    def choose(self, ranked: list[tuple[str, int]] | None) -> dict[str, Any]:
        """The offer for a member whose next-best services are ``ranked`` ((service, rank),
        customer_next_best_offer): the best-ranked one in the catalog, of equal ranks the
        higher margin, then the code; the fallback when the catalog has none of them."""
        listed = [(rank, -self.catalog[code].margin, code)
                  for code, rank in ranked or () if code in self.catalog]
        if not listed:
            return {**self.fallback.model_dump(), "source": "fallback"}
        _, _, code = min(listed)
        return {**self.catalog[code].model_dump(), "code": code, "source": "next_best"}


def _offer_kind(value: Any) -> str:
    if isinstance(value, dict) and "from" in value:
        return "[next_best_offer]"
    if isinstance(value, DynamicOffer):
        return "[next_best_offer]"
    return "[fixed]"


# Tags with '[' are left out of error locations (loading._pydantic_problems).
AnyOffer = Annotated[
    Annotated[Offer, Tag("[fixed]")] | Annotated[DynamicOffer, Tag("[next_best_offer]")],
    Discriminator(_offer_kind),
]


class Variant(BaseModel):
    """An A/B variant of a step: its own texts and optionally its own offer."""

    model_config = _STRICT
    name: str = Field(
        pattern=r"^[A-Za-z0-9_-]{1,40}$", description="Recorded in the outbox, like A or B"
    )
    weight: float = Field(default=1, ge=0, description="Relative share of the step's audience")
    offer: AnyOffer | None = Field(default=None, description="Overrides the step's offer")
    templates: Templates


# Day counts that only grow while nothing happens: a repeating step's window moves along them.
REPEATABLE_FIELDS = (
    "days_since_end",
    "days_since_purchase",
    "days_since_last_visit",
    "tenure_days",
)
MAX_REPEAT_STEPS = 24


class Repeat(BaseModel):
    """The last step of a phase sent again every `every_days` days until the phase has
    `max_steps` steps: its window (``when: {field: days_since_end, between: [a, b]}``) moves
    `every_days` later each time; each repetition is a step of its own (its own number and
    message key), with the step's offer and texts."""

    model_config = _STRICT
    every_days: int = Field(ge=1, le=365, description="Days between two repetitions")
    max_steps: int = Field(
        ge=2,
        le=MAX_REPEAT_STEPS,
        description="Steps of the phase in all, the written ones and the repetitions",
    )


class Step(BaseModel):
    """One message of a phase; a phase with several steps needs `when` on each."""

    model_config = _STRICT
    when: Condition = Field(
        default=None, description="Condition added to the phase audience for this step"
    )
    offer: AnyOffer
    templates: Templates | None = Field(
        default=None, description="The texts (variant A); or give `variants` instead"
    )
    variants: list[Variant] | None = Field(
        default=None,
        min_length=1,
        description="A/B variants, assigned by a stable hash of the customer",
    )
    repeat: Repeat | None = Field(
        default=None,
        description="Last step only: send it again every_days later, up to max_steps steps",
    )
    channels: list[Literal["sms", "email", "call"]] | None = Field(
        default=None,
        min_length=1,
        description="This step's channels in order of preference, instead of the phase's "
        "(e.g. [call, sms] for the step the front desk should call)",
    )


# What counts as a phase's conversion, and its default attribution window in days after the
# step's day (retention: until the membership ends, plus grace_days).
CONVERSION_EVENTS: dict[str, str] = {
    "activation": "first_visit",
    "stimulation": "addon_purchase",
    "cross_sell": "cross_sell_purchase",
    "retention": "renewal",
    "return": "new_membership",
}
DEFAULT_CONVERSION_DAYS: dict[str, int | None] = {
    "activation": 14,
    "stimulation": 30,
    "cross_sell": 30,
    "retention": None,
    "return": 30,
}


class Conversion(BaseModel):
    """How a phase's conversion is attributed to its step (the event itself is fixed per phase)."""

    model_config = _STRICT
    within_days: int | None = Field(
        default=None,
        ge=1,
        le=365,
        description="Days after the step's day in which the conversion counts (default: "
        "activation 14, stimulation 30, cross_sell 30, return 30; retention: until the "
        "membership ends, plus grace_days)",
    )
    grace_days: int = Field(
        default=7,
        ge=0,
        le=90,
        description="retention only: days after the membership's end a renewal still counts",
    )


class Phase(BaseModel):
    model_config = _STRICT
    name: Literal["activation", "stimulation", "cross_sell", "retention", "return"]
    description: str = ""
    enabled: bool = True
    priority: int = Field(ge=1, description="1 wins when a customer is in several phases")
    audience: Condition = Field(description="Who is in the phase, over customer_facts columns")
    channels: list[Literal["sms", "email", "call"]] = Field(
        min_length=1, description="In order of preference: the first reachable one is used"
    )
    steps: list[Step] = Field(min_length=1)
    max_sms_segments: int = Field(
        default=2,
        ge=1,
        le=10,
        description="An SMS longer than this many segments is never sent (skip 'too_long')",
    )
    frequency_caps: list[FrequencyCap] = Field(
        default_factory=list, description="Rolling caps counting this phase's messages only"
    )
    repeat: Literal["once_per_membership", "once_per_customer"] = Field(
        default="once_per_membership",
        description="How often each step may reach a customer",
    )
    conversion: Conversion = Field(
        default_factory=Conversion,
        description="The attribution window of the phase's conversion (see CONVERSION_EVENTS)",
    )

    def conversion_days(self) -> int | None:
        """Days after the step's day a conversion counts; None: until the membership ends."""
        if self.conversion.within_days is not None:
            return self.conversion.within_days
        return DEFAULT_CONVERSION_DAYS[self.name]


KEEP_ALIVE = "keep_alive"


class KeepAlive(BaseModel):
    """One low-key message to a customer nobody has reached for `every_days` days (no message
    sent, nothing confirmed their phone or email alive), so the base does not decay. Planned
    after every phase (lowest priority), within the ordinary caps, consents and control group;
    once per customer per period of `every_days` days."""

    model_config = _STRICT
    enabled: bool = True
    every_days: int = Field(
        default=365, ge=30, le=3650,
        description="Days without a message or a confirmation before a keep-alive is planned",
    )
    channels: list[Literal["sms", "email"]] = Field(
        min_length=1, description="In order of preference: the first reachable one is used"
    )
    offer: Offer = Field(description="What the message offers (its code is recorded)")
    templates: Templates
    max_sms_segments: int = Field(
        default=2, ge=1, le=10,
        description="An SMS longer than this many segments is never sent (skip 'too_long')",
    )
    max_per_day: int = Field(
        default=100, ge=1, le=100_000,
        description="Keep-alive candidates a day at most, the longest untouched first: a base "
        "that was never contacted is woken up over days, not in one blast",
    )


# Policy names KeepAlive, which needs Offer and Templates defined below it.
Policy.model_rebuild()


class RulesFile(BaseModel):
    model_config = _STRICT
    version: Literal[1]
    policy: Policy = Field(default_factory=Policy)
    phases: list[Phase] = Field(min_length=1)
