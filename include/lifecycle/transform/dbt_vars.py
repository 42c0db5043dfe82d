"""dbt vars generated from the rules file: dbt's copy of the phase windows.

One source of truth for phases (docs/architecture.md #1).

dbt models that need to know who is in which phase (``customer_phase_eligibility`` and the
history and metrics built on it) read one var, ``lifecycle_phases``: a JSON string with every
enabled phase and step, its priority and its audience as a SQL boolean expression over
``customer_facts`` columns. It is generated here from the validated rules, so dbt and the rule
engine (``planning.select_candidates``) evaluate the very same conditions.

Why this is not "YAML reaching the database as SQL": the marketer's text never becomes SQL. The
expression is the output of our own compiler (``rules.compile_condition``): its SQL text is a
fixed set of fragments, its identifiers are column names checked against the contracted
``customer_facts`` columns (``facts.FACT_COLUMNS``) and quoted, or the one relation a condition
may read besides (``customer_service_purchases``, which dbt resolves with ``ref``), and every
value the marketer wrote is a validated int, float, bool, date or string (or a list of them)
that psycopg renders as a quoted, escaped literal (``sql.Literal``), exactly as it would when
binding it. The var is dbt project configuration like any other: whoever can set dbt vars can
already change the SQL dbt runs.

Nothing generated from the rules file is committed: every run through
``lifecycle.transform.dbt`` passes the var for the rules file in use, and dbt unit tests pin
the phases they test in their own ``overrides: vars:``. For an ad-hoc dbt run,
``python -m lifecycle.transform.dbt_vars [RULES_FILE] [--as-of-date D]`` prints the ``--vars``
value: ``dbt build --vars "$(python -m lifecycle.transform.dbt_vars --as-of-date 2026-06-30)"``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from datetime import date
from pathlib import Path
from typing import Any

from psycopg import sql

from lifecycle.rules.compiled import Rules
from lifecycle.rules.conditions import SERVICE_PURCHASES_RELATION, Compiled
from lifecycle.rules.errors import RulesInvalid
from lifecycle.rules.loading import load_rules
from lifecycle.rules.models import CONVERSION_EVENTS

VAR_NAME = "lifecycle_phases"
FORMAT_VERSION = 1

# Relations a condition may read besides customer_facts: dbt models, referenced with ref().
DBT_RELATIONS = frozenset({SERVICE_PURCHASES_RELATION})
REF_MARKER = "__lifecycle_ref__{}__"
_REF_PREFIX = REF_MARKER.split("{")[0]

# A JSON string literal (with its escapes), for escaping braces inside strings only.
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')


def _sql_text(part: sql.Composable) -> str:
    """SQL text of a compiled condition; relations dbt builds become ref markers."""
    if isinstance(part, sql.Composed):
        return "".join(_sql_text(p) for p in part)
    text = part.as_string(None)
    if isinstance(part, sql.Identifier):
        for relation in DBT_RELATIONS:
            if text.endswith("." + sql.Identifier(relation).as_string(None)):
                # dbt resolves it with ref(): lineage orders the build, unit tests can mock it
                return REF_MARKER.format(relation)
    return text


def _literal(value: Any) -> str:
    """``value`` as a SQL literal whose text never contains a ref marker.

    A value may spell a marker (``__lifecycle_ref__...``): the dbt model would then replace
    it inside the literal. Such a literal is written as an escape string (``E'...'``) with every
    ``_`` as ``\\x5f``: the same value to PostgreSQL, so ``__lifecycle_ref__`` in the rendered
    condition only ever is a marker this module put there.
    """
    text = sql.Literal(value).as_string(None).strip()
    if _REF_PREFIX not in text:
        return text
    # psycopg writes a string (or a list's array text) as '...' or E'...', quotes doubled,
    # maybe followed by a cast (::date); only the quoted part changes.
    close = text.rindex("'")
    if text.startswith("E'"):
        body = text[2:close]
    elif text.startswith("'"):
        body = text[1:close].replace("\\", "\\\\")  # backslashes are escapes in E'...'
    else:
        raise ValueError(f"unexpected SQL literal for a value: {text[:60]}")
    return "E'" + body.replace("_", "\\x5f") + text[close:]


def render_condition(condition: Compiled) -> str:
    """The compiled condition as one SQL boolean expression with its values inlined as literals.

    A relation the condition reads besides customer_facts (``bought_service`` reads
    customer_service_purchases) is left as ``__lifecycle_ref__<model>__`` for the dbt model to
    replace with ``ref('<model>')``.
    """
    template = _sql_text(condition.sql)
    # The text holds our fixed fragments and quoted whitelisted names only, so every '%s' in
    # it is a placeholder; the values are rendered separately and spliced in, never parsed
    # for placeholders themselves.
    pieces = template.split("%s")
    if len(pieces) != len(condition.params) + 1:
        raise ValueError(
            f"condition has {len(pieces) - 1} placeholders but {len(condition.params)} values: "
            f"{template}"
        )
    out = [pieces[0]]
    for value, piece in zip(condition.params, pieces[1:], strict=True):
        out.append(_literal(value))
        out.append(piece)
    return "".join(out)


def phase_config(rules: Rules) -> dict[str, Any]:
    """The phases dbt needs: enabled phases by priority, each step with its SQL condition.

    Each phase also carries its conversion event and attribution window (``within_days``
    after the step's day, or null: until the membership ends plus ``grace_days``). Besides the
    phases: the policy's ``next_best_offer`` look-alike thresholds and ``send_time``'s lookback,
    which customer_next_best_offer and customer_send_hour read (macro lifecycle_setting).
    """
    return {
        "version": FORMAT_VERSION,
        "phases": [
            {
                "name": phase.name,
                "priority": phase.phase.priority,
                # the attribution window of the phase's conversions (phase_conversions)
                "conversion": {
                    "event": CONVERSION_EVENTS[phase.name],
                    "within_days": phase.phase.conversion_days(),
                    "grace_days": phase.phase.conversion.grace_days,
                },
                "steps": [
                    {"step": step.number, "condition": render_condition(step.condition)}
                    for step in phase.steps
                ],
            }
            for phase in rules.phases
        ],
        # the thresholds of customer_next_best_offer and customer_send_hour (policy)
        "next_best_offer": rules.policy.next_best_offer.model_dump(),
        "send_time": {"lookback_weeks": rules.policy.send_time.lookback_weeks},
    }


def _dumps(obj: Any, indent: int | None = None) -> str:
    """Stable JSON with no '{' or '}' inside strings.

    dbt renders dbt_project.yml vars as Jinja; a value like "{{ x }}" in a rule would be
    rendered there. Braces inside strings become \\u007b / \\u007d (the same JSON value), and
    the structure itself (objects inside lists only) never forms '{{', '{%' or '{#'.
    """
    separators = (",", ":") if indent is None else (",", ": ")
    text = json.dumps(obj, sort_keys=True, indent=indent, separators=separators, ensure_ascii=True)
    return _JSON_STRING.sub(
        lambda m: m.group(0).replace("{", "\\u007b").replace("}", "\\u007d"), text
    )


def phase_vars(rules: Rules) -> dict[str, str]:
    """dbt vars for these rules: ``{"lifecycle_phases": <JSON string>}``."""
    return {VAR_NAME: _dumps(phase_config(rules))}


def _iso_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a date like 2026-06-30") from None


def main(argv: list[str] | None = None) -> int:
    """Print the ``--vars`` JSON of an ad-hoc dbt run: the phases, and as_of_date if given."""
    from lifecycle.settings import get_settings

    parser = argparse.ArgumentParser(
        prog="python -m lifecycle.transform.dbt_vars",
        description="Print dbt's --vars for the rules file (default: LIFECYCLE_RULES_FILE).",
    )
    parser.add_argument("rules_file", nargs="?", type=Path)
    parser.add_argument("--as-of-date", type=_iso_date, help="also set as_of_date (YYYY-MM-DD)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    settings = get_settings()
    rules_file = args.rules_file or settings.rules_path
    try:
        rules = load_rules(rules_file, max_bytes=settings.rules_file_max_bytes)
    except RulesInvalid as exc:
        print(exc, file=sys.stderr)
        return 1
    dbt_vars: dict[str, str] = dict(phase_vars(rules))
    if args.as_of_date:
        dbt_vars["as_of_date"] = args.as_of_date.isoformat()
    print(json.dumps(dbt_vars))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
