"""Message templates: Jinja in a sandbox that sees non-contact facts, the offer and the variant.

Every template is rendered at validation time with sample values, so an unknown variable or a
template that cannot render is a located error, not a failed send.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from typing import Any

from jinja2 import StrictUndefined, Template, meta
from jinja2.exceptions import SecurityError, TemplateError, TemplateSyntaxError, UndefinedError
from jinja2.sandbox import SandboxedEnvironment

from lifecycle.rules import sms
from lifecycle.rules.errors import closest, listing, problem_at
from lifecycle.rules.models import DEFAULT_VARIANT
from lifecycle.warehouse.facts import FACT_COLUMNS, TEMPLATE_FIELDS

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

# The documented worst case a template is rendered with at validation (docs/rules.md, "Templates").
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
            f"offer has no field '{attr}' (valid: {listing(offer)})",
            closest(attr, list(offer)),
        )
    if isinstance(exc, SecurityError):
        return f"not allowed in a template: {text}", None
    return f"fails on the sample customer: {type(exc).__name__}: {text}", None


def check_template(
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
            problem_at(parts, f"template syntax error on its line {exc.lineno}: {exc.message}")
        )
        return
    except (TemplateError, RecursionError) as exc:
        errors.append(problem_at(parts, f"template error: {exc}"))
        return
    unknown = sorted(meta.find_undeclared_variables(parsed) - TEMPLATE_VARIABLES)
    for name in unknown:
        errors.append(
            problem_at(
                parts,
                f"template variable '{name}' does not exist",
                valid=listing(TEMPLATE_VARIABLES),
                suggestion=closest(name, sorted(TEMPLATE_VARIABLES)),
            )
        )
    if unknown or offer is None:
        return
    try:
        text = render(source, sample_context(offer, variant))
    except RENDER_ERRORS as exc:
        what, hint = _explain_render_error(exc, offer)
        errors.append(problem_at(parts, what, suggestion=hint))
        return
    if not text:
        errors.append(problem_at(parts, "renders to an empty message"))
        return
    if sms_limit is not None:
        info = sms.analyze(text)
        if info.segments > sms_limit:
            errors.append(
                problem_at(
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
