"""The phase rules file: loading, validation with located errors, and compilation to SQL.

A rules file is YAML that marketers edit. Every error names the file, line and column, the path
inside the document (``phases[2].steps[0].templates.sms``), what was found and what would be
valid, with a "did you mean" when a near name exists. All errors are reported at once: the
structure is checked by the pydantic models, and conditions, templates, priorities and the other
cross-field rules are checked by walking the raw document, so a typo in one place does not hide a
mistake in another.

Conditions are a small declarative grammar over the contracted columns of ``customer_facts``;
they compile to SQL with bound parameters and whitelisted, quoted identifiers only. Templates are
Jinja in a sandbox with only the mart's non-contact fields, the offer and the variant name.
"""

from __future__ import annotations

import copy
import datetime as dt
import difflib
import functools
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple

import yaml
from jinja2 import StrictUndefined, Template, meta
from jinja2.exceptions import SecurityError, TemplateError, TemplateSyntaxError, UndefinedError
from jinja2.sandbox import SandboxedEnvironment
from psycopg import sql
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    field_validator,
)

from lifecycle import sms
from lifecycle.facts import FACT_COLUMNS, TEMPLATE_FIELDS

PHASE_NAMES = ("activation", "stimulation", "cross_sell", "retention", "return")
CHANNELS = ("sms", "email")
SUPPRESSION_REASONS = ("opted_out", "hard_bounce", "spam_complaint", "manual")
DEFAULT_VARIANT = "A"

# --------------------------------------------------------------------------- errors


@dataclass(frozen=True)
class RuleError:
    """One mistake in a rules file, located and explained."""

    file: str
    line: int | None
    column: int | None
    path: str
    message: str
    found: str | None = None
    valid: str | None = None
    suggestion: str | None = None

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}:{self.column}"
        return f"{where}: {self.path}: {self.message}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "path": self.path,
            "message": self.message,
            "found": self.found,
            "valid": self.valid,
            "did_you_mean": self.suggestion,
        }


class RulesInvalid(Exception):
    def __init__(self, errors: list[RuleError]):
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))


ROOT = "<root>"


class Problem(NamedTuple):
    """A mistake found while walking the document, before it is located in the file."""

    parts: tuple
    message: str
    found: str | None = None
    valid: str | None = None
    suggestion: str | None = None
    at_key: bool = False  # locate the key itself (unknown fields), not its value

    @property
    def path(self) -> str:
        return _path_str(self.parts)


def _closest(found: Any, valid: list[str] | tuple[str, ...]) -> str | None:
    if not isinstance(found, str):
        return None
    close = difflib.get_close_matches(found, list(valid), n=1, cutoff=0.6)
    return close[0] if close else None


def _list(valid: list[str] | tuple[str, ...] | set[str] | frozenset[str], limit: int = 12) -> str:
    items = sorted(str(v) for v in valid)
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")


def _describe(value: Any) -> str:
    """What was found, short enough for one line of an error."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, dict):
        keys = ", ".join(str(k) for k in list(value)[:5])
        return f"a mapping with keys {keys}" if value else "an empty mapping"
    if isinstance(value, list):
        return f"a list of {len(value)} item(s)" if value else "an empty list"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _problem(
    parts: tuple,
    what: str,
    *,
    found: Any = ...,
    found_text: str | None = None,
    valid: str | None = None,
    suggestion: str | None = None,
    at_key: bool = False,
) -> Problem:
    """A Problem whose message reads: what; found ...; valid: ...; did you mean '...'?

    ``found`` is the value as read (described here); ``found_text`` an already-worded finding.
    """
    if found_text is None and found is not ...:
        found_text = _describe(found)
    msg = what
    if found_text is not None and "found" not in what:
        msg += f"; found {found_text}"
    if valid:
        # The message stays one readable line; RuleError.valid keeps the whole list.
        items = valid.split(", ")
        shown = (
            valid if len(items) <= 15 else ", ".join(items[:12]) + f", ... ({len(items)} in all)"
        )
        msg += f"; valid: {shown}"
    if suggestion:
        msg += f"; did you mean '{suggestion}'?"
    return Problem(parts, msg, found_text, valid, suggestion, at_key)


# --------------------------------------------------------------------------- YAML with positions

_MAX_NODES = 200_000  # an alias "bomb" expands exponentially; real files have a few hundred


def _path_str(parts: tuple[Any, ...]) -> str:
    if not parts:
        return ROOT
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        elif re.fullmatch(r"[A-Za-z0-9_-]+", str(p)):
            out += f".{p}" if out else str(p)
        else:  # an odd key (empty, with dots or spaces) is shown quoted
            out += f"[{json.dumps(str(p), ensure_ascii=False)}]"
    return out


@dataclass
class _Doc:
    data: Any
    marks: dict[tuple, tuple[int, int]]  # path -> (line, column) of the value, 1-based
    key_marks: dict[tuple, tuple[int, int]]  # path -> (line, column) of its key
    problems: list[Problem]


def _compose_with_marks(text: str) -> _Doc:
    """Parse YAML into Python data plus value and key positions (raises yaml.YAMLError)."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        doc = _Doc(None, {(): (1, 1)}, {}, [])
        if node is None:
            return doc
        count = 0

        def mark(n: yaml.Node) -> tuple[int, int]:
            return n.start_mark.line + 1, n.start_mark.column + 1

        def walk(n: yaml.Node, path: tuple, stack: frozenset[int]) -> Any:
            nonlocal count
            count += 1
            if count > _MAX_NODES:
                raise _TooLarge()
            doc.marks.setdefault(path, mark(n))
            if id(n) in stack:
                doc.problems.append(
                    _problem(path, "an alias refers to its own parent (recursive YAML)")
                )
                return None
            inner = stack | {id(n)}
            if isinstance(n, yaml.MappingNode):
                out: dict[str, Any] = {}
                for k, v in n.value:
                    if not isinstance(k, yaml.ScalarNode):
                        doc.problems.append(
                            Problem(path, "a key must be a plain name, not a list or mapping")
                        )
                        doc.marks.setdefault(path + ("?",), mark(k))
                        continue
                    key = k.value
                    if key in out:
                        doc.key_marks.setdefault(path + (key, "#dup"), mark(k))
                        doc.problems.append(
                            _problem(
                                path + (key, "#dup"),
                                f"key '{key}' appears twice (the first one is used)",
                                at_key=True,
                            )
                        )
                        continue
                    doc.key_marks[path + (key,)] = mark(k)
                    doc.marks[path + (key,)] = mark(v)
                    out[key] = walk(v, path + (key,), inner)
                return out
            if isinstance(n, yaml.SequenceNode):
                return [walk(v, path + (i,), inner) for i, v in enumerate(n.value)]
            try:
                return loader.construct_object(n, deep=True)
            except (yaml.YAMLError, ValueError, OverflowError) as exc:
                # e.g. a date like 2026-13-45 matches YAML's timestamp pattern but is no date
                doc.problems.append(
                    _problem(path, f"cannot read this value: {exc}", found_text=repr(n.value))
                )
                return None

        doc.data = walk(node, (), frozenset())
        return doc
    finally:
        loader.dispose()


class _TooLarge(Exception):
    pass


# libyaml when the wheel has it (10x faster); nodes carry the same marks either way.
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


# --------------------------------------------------------------------------- models

_STRICT = ConfigDict(extra="forbid", strict=True)

# Conditions are checked by compile_condition (better errors than a union of models); for
# editors the JSON Schema describes them with a recursive definition (see rules_json_schema).
_CONDITION_MARK = "x-lifecycle-condition"  # replaced by a $ref in rules_json_schema
Condition = Annotated[Any, WithJsonSchema({_CONDITION_MARK: True})]
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


class EmailTemplate(BaseModel):
    model_config = _STRICT
    subject: str = Field(min_length=1, description="Jinja template of the subject line")
    body: str = Field(min_length=1, description="Jinja template of the body")


class Templates(BaseModel):
    """One template per channel the phase lists."""

    model_config = _STRICT
    sms: str | None = Field(default=None, description="Jinja template of the SMS text")
    email: EmailTemplate | None = None


class Offer(BaseModel):
    """What the message offers; extra fields (price, valid_until...) are usable in templates."""

    model_config = ConfigDict(extra="allow", strict=True)
    code: str = Field(
        min_length=1, pattern=r"^[a-z0-9_]+$", description="Short id: lowercase, digits, _"
    )
    title: str = Field(min_length=1, description="Shown to the customer as {{ offer.title }}")


class Variant(BaseModel):
    """An A/B variant of a step: its own texts and optionally its own offer."""

    model_config = _STRICT
    name: str = Field(
        pattern=r"^[A-Za-z0-9_-]{1,40}$", description="Recorded in the outbox, like A or B"
    )
    weight: float = Field(default=1, ge=0, description="Relative share of the step's audience")
    offer: Offer | None = Field(default=None, description="Overrides the step's offer")
    templates: Templates


class Step(BaseModel):
    """One message of a phase; a phase with several steps needs `when` on each."""

    model_config = _STRICT
    when: Condition = Field(
        default=None, description="Condition added to the phase audience for this step"
    )
    offer: Offer
    templates: Templates | None = Field(
        default=None, description="The texts (variant A); or give `variants` instead"
    )
    variants: list[Variant] | None = Field(
        default=None,
        min_length=1,
        description="A/B variants, assigned by a stable hash of the customer",
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
    channels: list[Literal["sms", "email"]] = Field(
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


class RulesFile(BaseModel):
    model_config = _STRICT
    version: Literal[1]
    policy: Policy = Field(default_factory=Policy)
    phases: list[Phase] = Field(min_length=1)


# --------------------------------------------------------------------------- conditions

_OPS = ("eq", "ne", "lt", "lte", "gt", "gte", "between", "in", "not_in", "is_null")
_SQL_OP = {"eq": "=", "ne": "<>", "lt": "<", "lte": "<=", "gt": ">", "gte": ">="}
_NUMERIC = ("integer", "numeric")
_ORDERED = ("integer", "numeric", "date")  # types whose bounds can contradict
_OPS_FOR = {
    "integer": _OPS,
    "numeric": _OPS,
    "date": _OPS,
    "text": ("eq", "ne", "in", "not_in", "is_null"),
    "boolean": ("eq", "ne", "in", "not_in", "is_null"),
}
_CONDITION_KEYS = ("all", "any", "not", "field", "visits_in_last", "bought_service")
_CONDITION_SHAPES = (
    "{field: <column>, <operator>: <value>}, {visits_in_last: {days: 30, gte: 4}}, "
    "{bought_service: {service: massage, within_days: 90}}, "
    "{all: [...]}, {any: [...]} or {not: ...}"
)
SERVICE_PURCHASES_RELATION = "customer_service_purchases"


@dataclass(frozen=True)
class CompileContext:
    """What conditions compile against besides customer_facts' columns.

    ``schema`` is where dbt builds the marts (settings.dbt_schema): the relation of
    ``bought_service`` is ``sql.Identifier(schema, "customer_service_purchases")``, never text
    formatted from the rules file. ``services`` are the codes ``bought_service`` accepts.
    """

    schema: str
    services: frozenset[str]


@functools.lru_cache(maxsize=8)
def _read_service_catalog(path: str) -> frozenset[str]:
    import csv

    try:
        with open(path, encoding="utf-8", newline="") as f:
            return frozenset(
                row["service"].strip().lower() for row in csv.DictReader(f) if row.get("service")
            )
    except (OSError, KeyError, csv.Error):
        return frozenset()


def default_context(schema: str | None = None) -> CompileContext:
    """The dbt schema and service catalog (dbt_project/seeds/service_catalog.csv) in use."""
    from lifecycle.settings import get_settings

    settings = get_settings()
    catalog = settings.dbt_project_dir / "seeds" / "service_catalog.csv"
    return CompileContext(schema or settings.dbt_schema, _read_service_catalog(str(catalog)))


def visit_windows() -> dict[int, str]:
    """Windows ``visits_in_last`` accepts: days -> the customer_facts column counting them."""
    out = {}
    for name in FACT_COLUMNS:
        m = re.fullmatch(r"visits_last_(\d+)d", name)
        if m:
            out[int(m.group(1))] = name
    return dict(sorted(out.items()))


@dataclass
class Compiled:
    """A condition as SQL text with ``%s`` placeholders and its bound values."""

    sql: sql.Composable
    params: list[Any] = field(default_factory=list)


def _as_parts(path: tuple | str) -> tuple:
    return path if isinstance(path, tuple) else _parse_path(path)


def _parse_path(path: str) -> tuple:
    parts: list[Any] = []
    for m in re.finditer(r"([^.\[\]]+)|\[(\d+)\]", path):
        parts.append(int(m.group(2)) if m.group(2) is not None else m.group(1))
    return tuple(parts)


_TYPE_WORDS = {
    "integer": "a whole number",
    "numeric": "a number",
    "boolean": "true or false",
    "date": "a date like 2026-06-30",
    "text": "text",
}


def _coerce(ftype: str, value: Any) -> tuple[bool, Any]:
    """(ok, value as bound) for one comparison value of a column of type ``ftype``."""
    if ftype in _NUMERIC:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False, value
        if isinstance(value, float) and not math.isfinite(value):
            return False, value
        if ftype == "integer" and isinstance(value, float) and not value.is_integer():
            return False, value
        return True, int(value) if ftype == "integer" else value
    if ftype == "boolean":
        return isinstance(value, bool), value
    if ftype == "date":
        if isinstance(value, dt.datetime):
            return False, value
        if isinstance(value, dt.date):
            return True, value
        if isinstance(value, str):
            try:
                return True, dt.date.fromisoformat(value)
            except ValueError:
                return False, value
        return False, value
    return (isinstance(value, str) and "\x00" not in value), value


def compile_condition(
    cond: Any,
    path: tuple | str,
    errors: list,
    *,
    context: CompileContext | None = None,
    _fields: list | None = None,
) -> Compiled | None:
    """Compile one condition; append a Problem for each mistake (and return None)."""
    parts = _as_parts(path)
    context = context or default_context()
    if not isinstance(cond, dict) or not cond:
        errors.append(_problem(parts, "expected a condition", found=cond, valid=_CONDITION_SHAPES))
        return None
    kinds = [k for k in cond if k in _CONDITION_KEYS]
    if len(kinds) != 1 or (kinds[0] != "field" and len(cond) != 1):
        unknown = [k for k in cond if k not in _CONDITION_KEYS]
        if not kinds and unknown:
            errors.append(
                _problem(
                    parts + (unknown[0],),
                    f"unknown condition key '{unknown[0]}'",
                    valid=", ".join(_CONDITION_KEYS),
                    suggestion=_closest(unknown[0], _CONDITION_KEYS),
                    at_key=True,
                )
            )
        else:
            errors.append(
                _problem(
                    parts,
                    "a condition is exactly one of all, any, not, field, visits_in_last or "
                    "bought_service; combine several with all/any",
                    found_text=f"keys {', '.join(map(str, cond))}",
                    valid=_CONDITION_SHAPES,
                )
            )
        return None
    kind = kinds[0]
    if kind in ("all", "any"):
        items = cond[kind]
        if not isinstance(items, list) or not items:
            errors.append(
                _problem(
                    parts + (kind,),
                    f"'{kind}' takes a list of conditions",
                    found=items,
                    valid="a non-empty list, one condition per '- ' line",
                )
            )
            return None
        compiled = [
            compile_condition(
                c,
                parts + (kind, i),
                errors,
                context=context,
                _fields=_fields if kind == "all" else None,
            )
            for i, c in enumerate(items)
        ]
        if any(p is None for p in compiled):
            return None
        joiner = sql.SQL(" and " if kind == "all" else " or ")
        return Compiled(
            sql.SQL("(") + joiner.join(p.sql for p in compiled) + sql.SQL(")"),
            [v for p in compiled for v in p.params],
        )
    if kind == "not":
        inner = compile_condition(cond["not"], parts + ("not",), errors, context=context)
        if inner is None:
            return None
        # null-safe: a customer without the fact is not excluded by a NOT of it
        return Compiled(sql.SQL("not coalesce(") + inner.sql + sql.SQL(", false)"), inner.params)
    if kind == "bought_service":
        return _compile_bought(cond["bought_service"], parts + ("bought_service",), errors, context)
    if kind == "visits_in_last":
        return _compile_visits(cond["visits_in_last"], parts + ("visits_in_last",), errors, _fields)
    name = cond["field"]
    if not isinstance(name, str) or name not in FACT_COLUMNS:
        errors.append(
            _problem(
                parts + ("field",),
                f"unknown column '{name}'" if isinstance(name, str) else "expected a column name",
                found=name if not isinstance(name, str) else ...,
                valid=_list(FACT_COLUMNS, limit=200),
                suggestion=_closest(name, list(FACT_COLUMNS)),
            )
        )
        return None
    return _compile_comparison(
        name, {k: v for k, v in cond.items() if k != "field"}, parts, errors, _fields
    )


def _compile_bought(
    value: Any, parts: tuple, errors: list, context: CompileContext
) -> Compiled | None:
    """``exists`` a purchase of the service(s) in customer_service_purchases, within N days."""
    example = "{service: massage, within_days: 90}"
    if not isinstance(value, dict) or "service" not in value:
        errors.append(
            _problem(parts, f"expected {example}", found=value, valid="service and within_days")
        )
        return None
    unknown = [k for k in value if k not in ("service", "within_days")]
    if unknown:
        errors.append(
            _problem(
                parts + (unknown[0],),
                f"unknown key '{unknown[0]}'",
                valid="service, within_days",
                suggestion=_closest(unknown[0], ("service", "within_days")),
                at_key=True,
            )
        )
        return None
    raw = value["service"]
    services = raw if isinstance(raw, list) else [raw]
    ok = True
    if not services:
        errors.append(_problem(parts + ("service",), "no service given", found=raw))
        return None
    for i, svc in enumerate(services):
        where = parts + ("service",) + ((i,) if isinstance(raw, list) else ())
        if not isinstance(svc, str) or svc not in context.services:
            errors.append(
                _problem(
                    where,
                    "unknown service" if isinstance(svc, str) else "expected a service code",
                    found=svc,
                    valid=_list(context.services) + " (dbt_project/seeds/service_catalog.csv)",
                    suggestion=_closest(svc, sorted(context.services)),
                )
            )
            ok = False
    within = value.get("within_days")
    if within is not None and not (_is_int(within) and 1 <= within <= 3650):
        errors.append(
            _problem(
                parts + ("within_days",),
                "within_days is a number of days",
                found=within,
                valid="a whole number from 1 to 3650, or leave it out for 'ever'",
            )
        )
        ok = False
    if not ok:
        return None
    relation = sql.Identifier(context.schema, SERVICE_PURCHASES_RELATION)
    # The outer row is customer_facts (the relation the planner and dbt select from).
    text = sql.SQL(
        "exists (select 1 from {} _sp where _sp.customer_id = customer_facts.customer_id "
        "and _sp.service = any(%s)"
    ).format(relation)
    params: list[Any] = [list(services)]
    if within is not None:
        # within 30 days = on one of the 30 days ending on D: [D-29, D], like the marts' windows
        text += sql.SQL(" and _sp.last_purchased_on > customer_facts.as_of_date - %s::integer")
        params.append(within)
    return Compiled(text + sql.SQL(")"), params)


def _compile_visits(
    value: Any, parts: tuple, errors: list, _fields: list | None
) -> Compiled | None:
    windows = visit_windows()
    valid_days = ", ".join(str(d) for d in windows)
    if not isinstance(value, dict) or "days" not in value:
        errors.append(
            _problem(
                parts,
                "expected {days: <window>, <operator>: <count>}",
                found=value,
                valid=f"days one of {valid_days}, e.g. {{days: 30, gte: 4}}",
            )
        )
        return None
    days = value["days"]
    if not _is_int(days) or days not in windows:
        nearest = (
            min(windows, key=lambda d: abs(d - days))
            if isinstance(days, int | float) and not isinstance(days, bool)
            else None
        )
        errors.append(
            _problem(
                parts + ("days",),
                "no visit count over this many days in customer_facts",
                found=days,
                valid=valid_days,
                suggestion=str(nearest) if nearest is not None else None,
            )
        )
        return None
    return _compile_comparison(
        windows[days], {k: v for k, v in value.items() if k != "days"}, parts, errors, _fields
    )


def _compile_comparison(
    name: str, ops_given: dict, parts: tuple, errors: list, _fields: list | None
) -> Compiled | None:
    ftype = FACT_COLUMNS[name]
    allowed = _OPS_FOR[ftype]
    ops = list(ops_given)
    if len(ops) != 1 or ops[0] not in _OPS:
        bad = [o for o in ops if o not in _OPS]
        if bad:
            errors.append(
                _problem(
                    parts + (bad[0],),
                    f"unknown operator '{bad[0]}'",
                    valid=", ".join(allowed),
                    suggestion=_closest(bad[0], allowed),
                    at_key=True,
                )
            )
        else:
            errors.append(
                _problem(
                    parts,
                    f"exactly one operator per condition on '{name}'",
                    found_text=", ".join(map(str, ops)) if ops else "none",
                    valid=", ".join(allowed) + " (combine several with all)",
                )
            )
        return None
    op = ops[0]
    value = ops_given[op]
    ident = sql.Identifier(name)
    where = parts + (op,)
    if op not in allowed:
        errors.append(
            _problem(
                where,
                f"'{name}' is {ftype}: operator '{op}' does not apply",
                valid=", ".join(allowed),
            )
        )
        return None
    word = _TYPE_WORDS[ftype]
    if op == "is_null":
        if not isinstance(value, bool):
            errors.append(_problem(where, "is_null takes true or false", found=value))
            return None
        return Compiled(sql.SQL("{} is null" if value else "{} is not null").format(ident))
    if op == "between":
        coerced = [_coerce(ftype, v) for v in value] if isinstance(value, list) else []
        if len(coerced) != 2 or not all(ok for ok, _ in coerced):
            errors.append(
                _problem(
                    where,
                    f"'{name}' between needs [low, high]",
                    found=value,
                    valid=f"two values, each {word}, low first",
                )
            )
            return None
        low, high = (v for _, v in coerced)
        if low > high:
            errors.append(
                _problem(
                    where,
                    f"impossible window {value!r}: low is greater than high",
                    valid=f"[{high}, {low}]",
                )
            )
            return None
        if _fields is not None and ftype in _ORDERED:
            _fields.append((name, op, (low, high), where))
        return Compiled(sql.SQL("{} between %s and %s").format(ident), [low, high])
    if op in ("in", "not_in"):
        coerced = [_coerce(ftype, v) for v in value] if isinstance(value, list) else []
        if not coerced or not all(ok for ok, _ in coerced):
            errors.append(
                _problem(
                    where,
                    f"'{name}' {op} needs a list",
                    found=value,
                    valid=f"a non-empty list, each item {word}",
                )
            )
            return None
        tmpl = "{} = any(%s)" if op == "in" else "not coalesce({} = any(%s), false)"
        return Compiled(sql.SQL(tmpl).format(ident), [[v for _, v in coerced]])
    if value is None:
        errors.append(
            _problem(
                where, f"'{name}' {op} needs a value; for empty use is_null: true", found=value
            )
        )
        return None
    ok, bound = _coerce(ftype, value)
    if not ok:
        errors.append(
            _problem(
                where,
                f"'{name}' is {ftype}; found {value!r} ({type(value).__name__})",
                valid=word,
            )
        )
        return None
    if _fields is not None and ftype in _ORDERED:
        _fields.append((name, op, bound, where))
    return Compiled(sql.SQL("{} " + _SQL_OP[op] + " %s").format(ident), [bound])


def _contradiction(conjuncts: list) -> tuple[tuple, str] | None:
    """A field whose conjunctive bounds leave no value: (path, explanation), else None."""
    by_field: dict[str, list] = {}
    for name, op, value, where in conjuncts:
        by_field.setdefault(name, []).append((op, value, where))
    for name, items in by_field.items():
        ftype = FACT_COLUMNS[name]
        discrete = ftype in ("integer", "date")

        def num(v: Any) -> float:
            return float(v.toordinal()) if isinstance(v, dt.date) else float(v)

        lo, hi = -math.inf, math.inf
        lo_strict = hi_strict = False
        for op, value, _ in items:
            if op == "between":
                bounds = [(">=", num(value[0])), ("<=", num(value[1]))]
            elif op == "eq":
                bounds = [(">=", num(value)), ("<=", num(value))]
            elif op in ("gt", "gte", "lt", "lte"):
                bounds = [({"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}[op], num(value))]
            else:
                continue
            for sym, v in bounds:
                if discrete and sym == ">":
                    sym, v = ">=", math.floor(v) + 1
                if discrete and sym == "<":
                    sym, v = "<=", math.ceil(v) - 1
                if sym[0] == ">" and (v > lo or (v == lo and sym == ">")):
                    lo, lo_strict = v, sym == ">"
                if sym[0] == "<" and (v < hi or (v == hi and sym == "<")):
                    hi, hi_strict = v, sym == "<"
        if lo > hi or (lo == hi and (lo_strict or hi_strict)):
            shown = " and ".join(
                f"{op} {list(v) if isinstance(v, tuple) else v}" for op, v, _ in items
            )
            return items[-1][2], f"no value of '{name}' satisfies {shown}"
    return None


# --------------------------------------------------------------------------- templates


class _Sandbox(SandboxedEnvironment):
    """The sandbox, plus a bound on ``*`` and ``**`` so a template cannot build a huge value."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, int | float) and abs(right) > 100:
            raise SecurityError("exponent too large in a template")
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if (
                    isinstance(seq, str | list | tuple)
                    and isinstance(n, int)
                    and len(seq) * n > 10_000
                ):
                    raise SecurityError("repetition too large in a template")
        return super().call_binop(context, operator, left, right)


# An empty fact prints as nothing, not "None".
_ENV = _Sandbox(
    undefined=StrictUndefined,
    autoescape=False,
    keep_trailing_newline=False,
    finalize=lambda v: "" if v is None else v,
)
TEMPLATE_VARIABLES = frozenset(TEMPLATE_FIELDS | {"offer", "variant"})

# The documented worst case a template is rendered with at validation (README "For marketers").
# Every text is 20 Cyrillic characters: one such character turns a whole SMS into UCS-2, as a
# Ukrainian name does, and 20 is longer than nearly all first names.
SAMPLE_FIRST_NAME = "Анастасія-Олександра"
_SAMPLE_BY_TYPE: dict[str, Any] = {
    "text": "Абвгґдеєжзиіїйклмноп",
    "integer": 9999,
    "numeric": 99999.99,
    "date": dt.date(2026, 12, 31),
    "boolean": False,
}


def sample_context(offer: dict[str, Any], variant: str = DEFAULT_VARIANT) -> dict[str, Any]:
    """The worst-case customer a template is checked against (longest plausible values)."""
    ctx: dict[str, Any] = {k: _SAMPLE_BY_TYPE[FACT_COLUMNS[k]] for k in TEMPLATE_FIELDS}
    ctx["first_name"] = SAMPLE_FIRST_NAME
    ctx["offer"] = offer
    ctx["variant"] = variant
    return ctx


def template_context(
    facts: dict[str, Any], offer: dict[str, Any], variant: str = DEFAULT_VARIANT
) -> dict[str, Any]:
    """What a template sees for one customer: the mart's non-contact fields, offer, variant."""
    ctx = {k: facts.get(k) for k in TEMPLATE_FIELDS}
    ctx["offer"] = offer
    ctx["variant"] = variant
    return ctx


RENDER_ERRORS = (
    TemplateError,
    TypeError,
    ValueError,
    ArithmeticError,
    LookupError,
    AttributeError,
    RecursionError,
)


@functools.lru_cache(maxsize=512)
def _template(source: str) -> Template:
    # Compiling is the costly part of rendering; a day renders a few templates thousands of times.
    return _ENV.from_string(source)


def render(source: str, context: dict[str, Any]) -> str:
    """Render a message template in the sandbox (undefined names raise)."""
    return _template(source).render(**context).strip()


def _explain_render_error(exc: BaseException, offer: dict[str, Any]) -> tuple[str, str | None]:
    text = str(exc)
    m = re.search(r"has no attribute '([^']+)'", text)
    if isinstance(exc, UndefinedError) and m and "dict object" in text:
        attr = m.group(1)
        return (
            f"offer has no field '{attr}' (valid: {_list(offer)})",
            _closest(attr, list(offer)),
        )
    if isinstance(exc, SecurityError):
        return f"not allowed in a template: {text}", None
    return f"fails on the sample customer: {type(exc).__name__}: {text}", None


def _check_template(
    source: str,
    parts: tuple,
    errors: list,
    *,
    offer: dict[str, Any] | None,
    variant: str,
    sms_limit: int | None = None,
) -> None:
    """Syntax, variables, a render of the worst-case sample and (SMS) its segment count."""
    try:
        parsed = _ENV.parse(source)
        _template(source)  # compile too: unknown filters and tests fail here
    except TemplateSyntaxError as exc:
        errors.append(
            _problem(parts, f"template syntax error on its line {exc.lineno}: {exc.message}")
        )
        return
    except (TemplateError, RecursionError) as exc:
        errors.append(_problem(parts, f"template error: {exc}"))
        return
    unknown = sorted(meta.find_undeclared_variables(parsed) - TEMPLATE_VARIABLES)
    for name in unknown:
        errors.append(
            _problem(
                parts,
                f"template variable '{name}' does not exist",
                valid=_list(TEMPLATE_VARIABLES),
                suggestion=_closest(name, sorted(TEMPLATE_VARIABLES)),
            )
        )
    if unknown or offer is None:
        return
    try:
        text = render(source, sample_context(offer, variant))
    except RENDER_ERRORS as exc:
        what, hint = _explain_render_error(exc, offer)
        errors.append(_problem(parts, what, suggestion=hint))
        return
    if not text:
        errors.append(_problem(parts, "renders to an empty message"))
        return
    if sms_limit is not None:
        info = sms.analyze(text)
        if info.segments > sms_limit:
            errors.append(
                _problem(
                    parts,
                    f"too long: {info.segments} SMS segments ({info.length} {info.encoding} "
                    f"characters) with the worst-case sample customer "
                    f"(first_name '{SAMPLE_FIRST_NAME}'); the phase's max_sms_segments is "
                    f"{sms_limit}",
                    found_text=f"{info.segments} segments",
                    valid=f"at most {sms.max_length('UCS-2', sms_limit)} characters with any "
                    f"Cyrillic letter (UCS-2), {sms.max_length('GSM-7', sms_limit)} in plain "
                    "Latin (GSM-7); shorten the text or raise max_sms_segments",
                )
            )


# --------------------------------------------------------------------------- compiled rules


@dataclass(frozen=True)
class CompiledVariant:
    name: str
    weight: float
    offer: Offer
    templates: Templates


@dataclass
class CompiledStep:
    number: int
    offer: Offer
    templates: Templates  # of the first variant when the step has variants
    condition: Compiled  # audience AND when
    variants: list[CompiledVariant] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.variants:
            self.variants = [CompiledVariant(DEFAULT_VARIANT, 1.0, self.offer, self.templates)]


@dataclass
class CompiledPhase:
    phase: Phase
    steps: list[CompiledStep]

    @property
    def name(self) -> str:
        return self.phase.name


@dataclass
class Rules:
    source: str
    model: RulesFile
    phases: list[CompiledPhase]  # enabled ones, by priority
    file: str = "<rules>"

    @property
    def policy(self) -> Policy:
        return self.model.policy

    def phase(self, name: str) -> CompiledPhase | None:
        return next((p for p in self.phases if p.name == name), None)

    def fingerprint(self) -> str:
        return hashlib.sha256(self.model.model_dump_json().encode()).hexdigest()[:12]


def assign_variant(
    customer_id: str, phase: str, step: int, variants: list[CompiledVariant], salt: str
) -> CompiledVariant:
    """The customer's variant of a step: a stable hash, so the same customer keeps it daily."""
    total = sum(v.weight for v in variants)
    if len(variants) == 1 or total <= 0:
        return variants[0]
    digest = hashlib.sha256(f"{salt}:{phase}:{step}:{customer_id}".encode()).digest()
    point = int.from_bytes(digest[:8], "big") / 2**64 * total
    upto = 0.0
    for v in variants:
        upto += v.weight
        if point < upto:
            return v
    return variants[-1]


def in_control_group(customer_id: str, percent: float, salt: str) -> bool:
    """Deterministic by hashed customer id and salt: stable across days and rule edits."""
    digest = hashlib.sha256(f"{salt}:{customer_id}".encode()).digest()
    bucket = int.from_bytes(digest[:8], "big") / 2**64
    return bucket < percent / 100.0


# --------------------------------------------------------------------------- loading


def load_rules(path: Path | str, *, schema: str | None = None) -> Rules:
    """Read and validate a rules file; raise RulesInvalid with every error found."""
    path = Path(path)
    name = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RulesInvalid(
            [RuleError(name, None, None, ROOT, f"cannot read the file: {exc.strerror or exc}")]
        ) from None
    except UnicodeDecodeError as exc:
        raise RulesInvalid(
            [RuleError(name, None, None, ROOT, f"the file is not UTF-8 text: {exc.reason}")]
        ) from None
    return parse_rules(text, name, schema=schema)


def _yaml_error(name: str, text: str, exc: yaml.YAMLError) -> RuleError:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    if mark is not None:
        line, col = mark.line + 1, mark.column + 1
    elif isinstance(getattr(exc, "position", None), int):  # ReaderError: a bad character
        before = text[: exc.position]
        line, col = before.count("\n") + 1, len(before) - (before.rfind("\n") + 1) + 1
    else:
        line, col = None, None
    what = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return RuleError(name, line, col, ROOT, f"not valid YAML: {what}")


def parse_rules(text: str, name: str = "<rules>", *, schema: str | None = None) -> Rules:
    """Validate rules given as text (``name`` is used in errors).

    ``schema``: where dbt builds the marts (default: settings.dbt_schema), for conditions that
    read a mart besides customer_facts.
    """
    try:
        doc = _compose_with_marks(text)
    except yaml.YAMLError as exc:
        raise RulesInvalid([_yaml_error(name, text, exc)]) from None
    except UnicodeError as exc:  # a lone surrogate in a str handed to parse_rules
        raise RulesInvalid(
            [RuleError(name, None, None, ROOT, f"not valid text: {exc.reason}")]
        ) from None
    except _TooLarge:
        raise RulesInvalid(
            [RuleError(name, 1, 1, ROOT, "the document is too large (aliases expanding?)")]
        ) from None
    problems = list(doc.problems)
    data = doc.data
    if not isinstance(data, dict):
        problems.append(
            _problem(
                (),
                "expected a mapping with the keys version, policy and phases",
                found=data,
            )
        )
        raise RulesInvalid(_locate_all(name, doc, problems))

    model: RulesFile | None = None
    try:
        model = RulesFile.model_validate(data)
    except ValidationError as exc:
        problems.extend(_pydantic_problems(exc))
    compiled = _Semantics(data, problems, default_context(schema))
    compiled.check()
    if problems or model is None:
        raise RulesInvalid(_locate_all(name, doc, problems))

    phases: list[CompiledPhase] = []
    for i, phase in enumerate(model.phases):
        steps: list[CompiledStep] = []
        for j, step in enumerate(phase.steps):
            condition = compiled.step_conditions[(i, j)]
            if step.variants:
                variants = [
                    CompiledVariant(v.name, v.weight, v.offer or step.offer, v.templates)
                    for v in step.variants
                ]
                steps.append(
                    CompiledStep(j + 1, step.offer, variants[0].templates, condition, variants)
                )
            else:
                assert step.templates is not None  # checked by _Semantics
                steps.append(CompiledStep(j + 1, step.offer, step.templates, condition))
        if phase.enabled:
            phases.append(CompiledPhase(phase, steps))
    phases.sort(key=lambda cp: cp.phase.priority)
    return Rules(text, model, phases, name)


def _locate_all(name: str, doc: _Doc, problems: list[Problem]) -> list[RuleError]:
    out: list[RuleError] = []
    seen: set[tuple[str, str]] = set()
    for p in problems:
        parts = tuple(x for x in p.parts if x != "#dup")
        line, col = _locate(doc, p.parts, p.at_key)
        err = RuleError(
            name, line, col, _path_str(parts), p.message, p.found, p.valid, p.suggestion
        )
        if (err.path, err.message) not in seen:
            seen.add((err.path, err.message))
            out.append(err)
    out.sort(key=lambda e: (e.line or 0, e.column or 0, e.path))
    return out


def _locate(doc: _Doc, parts: tuple, at_key: bool = False) -> tuple[int | None, int | None]:
    if at_key and parts in doc.key_marks:
        return doc.key_marks[parts]
    for n in range(len(parts), -1, -1):
        if parts[:n] in doc.marks:
            return doc.marks[parts[:n]]
    return None, None


# ---- pydantic errors, made readable

_VALID_BY_TYPE = {
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "text (quote it if it looks like a number or date)",
    "list_type": "a list ('- ' lines or [a, b])",
    "model_type": "a mapping (key: value lines)",
    "dict_type": "a mapping (key: value lines)",
    "time_type": "a time like '10:00'",
    "time_parsing": "a time like '10:00'",
}


def _pydantic_problems(exc: ValidationError) -> list[Problem]:
    out: list[Problem] = []
    for e in exc.errors():
        parts = tuple(p for p in e["loc"] if not (isinstance(p, str) and "[" in p))
        typ, inp, ctx = e["type"], e.get("input"), e.get("ctx") or {}
        field_name = parts[-1] if parts else ROOT
        if typ == "extra_forbidden":
            valid = _model_fields_at(parts[:-1])
            out.append(
                _problem(
                    parts,
                    f"unknown field '{field_name}'",
                    valid=", ".join(valid) if valid else None,
                    suggestion=_closest(str(field_name), valid),
                    at_key=True,
                )
            )
        elif typ == "missing":
            info = _field_info_at(parts)
            desc = info.description if info is not None and info.description else None
            out.append(_problem(parts, f"required field '{field_name}' is missing", valid=desc))
        elif typ == "literal_error":
            choices = re.findall(r"'([^']*)'", str(ctx.get("expected", ""))) or [
                str(ctx.get("expected", ""))
            ]
            out.append(
                _problem(
                    parts,
                    "not one of the choices",
                    found=inp,
                    valid=", ".join(choices),
                    suggestion=_closest(inp, choices),
                )
            )
        elif typ in _VALID_BY_TYPE:
            out.append(
                _problem(
                    parts, f"wrong type for '{field_name}'", found=inp, valid=_VALID_BY_TYPE[typ]
                )
            )
        elif typ in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
            sym = {
                "greater_than_equal": ">=",
                "greater_than": ">",
                "less_than_equal": "<=",
                "less_than": "<",
            }[typ]
            bound = next(iter(ctx.values()), "?")
            out.append(
                _problem(
                    parts, f"'{field_name}' is out of range", found=inp, valid=f"{sym} {bound}"
                )
            )
        elif typ in ("too_short", "string_too_short"):
            n = ctx.get("min_length", 1)
            what = "item(s)" if typ == "too_short" else "character(s)"
            out.append(
                _problem(
                    parts, f"'{field_name}' is too short", found=inp, valid=f"at least {n} {what}"
                )
            )
        elif typ == "string_pattern_mismatch":
            out.append(
                _problem(
                    parts,
                    f"'{field_name}' has characters that are not allowed",
                    found=inp,
                    valid=f"text matching {ctx.get('pattern')}",
                )
            )
        elif typ == "value_error":
            out.append(_problem(parts, str(ctx.get("error", e["msg"])), found=inp))
        else:
            out.append(_problem(parts, e["msg"], found=inp))
    return out


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def _field_info_at(parts: tuple) -> Any:
    model: type[BaseModel] | None = RulesFile
    info = None
    for p in parts:
        if isinstance(p, int):
            continue
        if model is None:
            return None
        info = model.model_fields.get(p)
        if info is None:
            return None
        model = _model_of(info.annotation)
    return info


def _model_fields_at(parts: tuple) -> list[str]:
    """Field names valid at a document path, for 'did you mean'."""
    model: type[BaseModel] | None = RulesFile
    for p in parts:
        if isinstance(p, int):
            continue
        if model is None:
            return []
        info = model.model_fields.get(p)
        if info is None:
            return []
        model = _model_of(info.annotation)
    return list(model.model_fields) if model is not None else []


# ---- the semantic walk over the raw document


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _valid_offer(raw: Any) -> dict[str, Any] | None:
    try:
        return Offer.model_validate(raw).model_dump()
    except ValidationError:
        return None


class _Semantics:
    """Conditions, templates and cross-field rules, checked on the raw data.

    Runs whether or not the models validated, so every mistake is reported in one go; values
    of the wrong type are skipped here (the models already report them).
    """

    def __init__(self, data: dict[str, Any], problems: list[Problem], context: CompileContext):
        self.data = data
        self.problems = problems
        self.context = context
        self.step_conditions: dict[tuple[int, int], Compiled] = {}

    def add(self, problem: Problem) -> None:
        self.problems.append(problem)

    def check(self) -> None:
        policy = self.data.get("policy")
        if isinstance(policy, dict):
            self.check_policy(policy)
        phases = self.data.get("phases")
        if not isinstance(phases, list):
            return
        names: dict[str, int] = {}
        priorities: dict[int, str] = {}
        for i, phase in enumerate(phases):
            if not isinstance(phase, dict):
                continue
            base = ("phases", i)
            name = phase.get("name")
            if isinstance(name, str) and name in PHASE_NAMES:
                if name in names:
                    self.add(
                        _problem(
                            base + ("name",),
                            f"phase '{name}' is defined twice (also phases[{names[name]}])",
                            valid=f"each of {', '.join(PHASE_NAMES)} at most once",
                        )
                    )
                names.setdefault(name, i)
            priority = phase.get("priority")
            if _is_int(priority) and phase.get("enabled", True) is True:
                if priority in priorities:
                    self.add(
                        _problem(
                            base + ("priority",),
                            f"priority {priority} is also used by '{priorities[priority]}'; "
                            "each enabled phase needs its own",
                            found=priority,
                            valid="a number no other enabled phase uses",
                        )
                    )
                priorities.setdefault(priority, str(name))
            self.check_phase(phase, base)

    def check_policy(self, policy: dict[str, Any]) -> None:
        window = policy.get("send_window")
        if isinstance(window, dict):
            try:
                w = SendWindow.model_validate(window)
            except ValidationError:
                return
            if w.start >= w.end:
                self.add(
                    _problem(
                        ("policy", "send_window"),
                        f"the send window closes ({w.end:%H:%M}) before it opens ({w.start:%H:%M})",
                        valid="start earlier than end, like 10:00-20:00",
                    )
                )

    def check_phase(self, phase: dict[str, Any], base: tuple) -> None:
        channels_raw = phase.get("channels")
        channels: list[str] = []
        if isinstance(channels_raw, list):
            for c in channels_raw:
                if isinstance(c, str) and c in CHANNELS:
                    if c in channels:
                        self.add(_problem(base + ("channels",), f"channel '{c}' is listed twice"))
                    else:
                        channels.append(c)
        seg = phase.get("max_sms_segments", 2)
        sms_limit = seg if _is_int(seg) and 1 <= seg <= 10 else None

        audience = None
        audience_fields: list = []
        if "audience" in phase:
            audience = compile_condition(
                phase["audience"],
                base + ("audience",),
                self.problems,
                context=self.context,
                _fields=audience_fields,
            )
            if audience is not None:
                bad = _contradiction(audience_fields)
                if bad:
                    self.add(
                        _problem(
                            bad[0],
                            f"impossible audience: {bad[1]}",
                            valid="conditions some customer can meet",
                        )
                    )
                    audience = None
        steps = phase.get("steps")
        if not isinstance(steps, list):
            return
        for j, step in enumerate(steps):
            if not isinstance(step, dict):
                continue
            sbase = base + ("steps", j)
            condition = audience
            if len(steps) > 1 and step.get("when") is None:
                self.add(
                    _problem(
                        sbase,
                        "a phase with several steps needs a 'when' condition on each step",
                        valid="e.g. when: {field: days_since_end, between: [30, 59]}",
                    )
                )
            if step.get("when") is not None:
                when_fields: list = []
                when = compile_condition(
                    step["when"],
                    sbase + ("when",),
                    self.problems,
                    context=self.context,
                    _fields=when_fields,
                )
                if when is not None and audience is not None:
                    bad = _contradiction(audience_fields + when_fields)
                    if bad:
                        self.add(
                            _problem(
                                sbase + ("when",),
                                f"impossible step: with the phase audience, {bad[1]}",
                                valid="a when that overlaps the audience",
                            )
                        )
                        condition = None
                    else:
                        condition = Compiled(
                            sql.SQL("(")
                            + audience.sql
                            + sql.SQL(" and ")
                            + when.sql
                            + sql.SQL(")"),
                            audience.params + when.params,
                        )
                else:
                    condition = None
            if condition is not None:
                self.step_conditions[(base[1], j)] = condition
            self.check_step_texts(step, sbase, channels, sms_limit)

    def check_step_texts(
        self, step: dict[str, Any], sbase: tuple, channels: list[str], sms_limit: int | None
    ) -> None:
        offer = _valid_offer(step.get("offer"))
        has_t, has_v = step.get("templates") is not None, step.get("variants") is not None
        if has_t == has_v:
            self.add(
                _problem(
                    sbase,
                    "a step has either 'templates' or 'variants'" + (", not both" if has_t else ""),
                    valid="templates: {sms: ..., email: ...} or variants: [{name: A, ...}, ...]",
                )
            )
        if has_t:
            self.check_templates(
                step["templates"],
                sbase + ("templates",),
                channels,
                offer,
                DEFAULT_VARIANT,
                sms_limit,
            )
        variants = step.get("variants")
        if not isinstance(variants, list):
            return
        if not variants:
            return  # the model reports the empty list
        seen: set[str] = set()
        total = 0.0
        for k, v in enumerate(variants):
            if not isinstance(v, dict):
                continue
            vbase = sbase + ("variants", k)
            vname = v.get("name")
            if isinstance(vname, str):
                if vname in seen:
                    self.add(_problem(vbase + ("name",), f"variant '{vname}' is defined twice"))
                seen.add(vname)
            weight = v.get("weight", 1)
            if isinstance(weight, int | float) and not isinstance(weight, bool):
                total += max(weight, 0)
            v_offer = _valid_offer(v["offer"]) if v.get("offer") is not None else offer
            if "templates" in v:
                self.check_templates(
                    v["templates"],
                    vbase + ("templates",),
                    channels,
                    v_offer,
                    vname if isinstance(vname, str) else DEFAULT_VARIANT,
                    sms_limit,
                )
        if total <= 0:
            self.add(
                _problem(
                    sbase + ("variants",),
                    "the variants' weights add up to 0: nobody would get a message",
                    valid="at least one weight above 0",
                )
            )

    def check_templates(
        self,
        templates: Any,
        tbase: tuple,
        channels: list[str],
        offer: dict[str, Any] | None,
        variant: str,
        sms_limit: int | None,
    ) -> None:
        if not isinstance(templates, dict):
            return
        for ch in channels:
            if templates.get(ch) is None:
                self.add(
                    _problem(
                        tbase,
                        f"channel '{ch}' is listed in channels but has no template",
                        valid=f"add templates.{ch}, or remove '{ch}' from channels",
                    )
                )
        # Every text given is checked, listed channel or not: it may be listed tomorrow.
        text = templates.get("sms")
        if isinstance(text, str) and text:
            _check_template(
                text,
                tbase + ("sms",),
                self.problems,
                offer=offer,
                variant=variant,
                sms_limit=sms_limit,
            )
        email = templates.get("email")
        if isinstance(email, dict):
            for part in ("subject", "body"):
                if isinstance(email.get(part), str) and email[part]:
                    _check_template(
                        email[part],
                        tbase + ("email", part),
                        self.problems,
                        offer=offer,
                        variant=variant,
                    )


# --------------------------------------------------------------------------- JSON Schema


def _condition_schema() -> dict[str, Any]:
    ref = {"$ref": "#/$defs/Condition"}
    columns = sorted(FACT_COLUMNS)
    op_props: dict[str, Any] = {op: {} for op in _OPS}
    op_props["between"] = {"type": "array", "minItems": 2, "maxItems": 2}
    op_props["in"] = {"type": "array", "minItems": 1}
    op_props["not_in"] = {"type": "array", "minItems": 1}
    op_props["is_null"] = {"type": "boolean"}
    count_ops = {
        op: ({"type": "number"} if op not in ("between", "in", "not_in", "is_null") else spec)
        for op, spec in op_props.items()
    }
    return {
        "description": "A condition over customer_facts columns: a comparison, "
        "visits_in_last, bought_service, or all/any/not of conditions.",
        "anyOf": [
            {
                "type": "object",
                "properties": {"all": {"type": "array", "items": ref, "minItems": 1}},
                "required": ["all"],
                "additionalProperties": False,
            },
            {
                "type": "object",
                "properties": {"any": {"type": "array", "items": ref, "minItems": 1}},
                "required": ["any"],
                "additionalProperties": False,
            },
            {
                "type": "object",
                "properties": {"not": ref},
                "required": ["not"],
                "additionalProperties": False,
            },
            {
                "type": "object",
                "properties": {"field": {"enum": columns}, **op_props},
                "required": ["field"],
                "minProperties": 2,
                "maxProperties": 2,
                "additionalProperties": False,
            },
            {
                "type": "object",
                "properties": {
                    "bought_service": {
                        "type": "object",
                        "properties": {
                            "service": {
                                "anyOf": [
                                    {"type": "string"},
                                    {"type": "array", "items": {"type": "string"}, "minItems": 1},
                                ],
                                "description": "A service code of the service catalog",
                            },
                            "within_days": {"type": "integer", "minimum": 1, "maximum": 3650},
                        },
                        "required": ["service"],
                        "additionalProperties": False,
                    }
                },
                "required": ["bought_service"],
                "additionalProperties": False,
            },
            {
                "type": "object",
                "properties": {
                    "visits_in_last": {
                        "type": "object",
                        "properties": {"days": {"enum": list(visit_windows())}, **count_ops},
                        "required": ["days"],
                        "minProperties": 2,
                        "maxProperties": 2,
                        "additionalProperties": False,
                    }
                },
                "required": ["visits_in_last"],
                "additionalProperties": False,
            },
        ],
    }


def rules_json_schema() -> dict[str, Any]:
    """JSON Schema of the rules file, for editors (``lifecycle rules schema``)."""

    def refs(node: Any) -> Any:
        if isinstance(node, dict):
            if node.get(_CONDITION_MARK):
                rest = {k: v for k, v in node.items() if k != _CONDITION_MARK}
                return {"$ref": "#/$defs/Condition", **rest}
            return {k: refs(v) for k, v in node.items()}
        if isinstance(node, list):
            return [refs(v) for v in node]
        return node

    schema = refs(copy.deepcopy(RulesFile.model_json_schema()))
    schema.setdefault("$defs", {})["Condition"] = _condition_schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "lifecycle rules file (include/rules/phases.yml)",
        **{k: v for k, v in schema.items() if k != "title"},
    }


def rules_json_schema_text() -> str:
    return json.dumps(rules_json_schema(), indent=2, ensure_ascii=False, sort_keys=True) + "\n"
