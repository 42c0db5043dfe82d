"""Audience conditions: a small declarative grammar compiled to SQL over ``customer_facts``.

Only the mart's contracted columns, whitelisted operators, quoted identifiers and bound
parameters reach SQL. Type mismatches and contradictions (``gt 10`` with ``lt 5``) are errors.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import re
from dataclasses import dataclass, field
from typing import Any

from psycopg import sql

from lifecycle.rules.errors import closest, listing, problem_at
from lifecycle.warehouse.facts import FACT_COLUMNS, FACT_VALUES

# --------------------------------------------------------------------------- conditions

OPS = ("eq", "ne", "lt", "lte", "gt", "gte", "between", "in", "not_in", "is_null")
_SQL_OP = {"eq": "=", "ne": "<>", "lt": "<", "lte": "<=", "gt": ">", "gte": ">="}
_NUMERIC = ("integer", "numeric")
_ORDERED = ("integer", "numeric", "date")  # types whose bounds can contradict
_OPS_FOR = {
    "integer": OPS,
    "numeric": OPS,
    "date": OPS,
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


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


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
        errors.append(
            problem_at(parts, "expected a condition", found=cond, valid=_CONDITION_SHAPES)
        )
        return None
    kinds = [k for k in cond if k in _CONDITION_KEYS]
    if len(kinds) != 1 or (kinds[0] != "field" and len(cond) != 1):
        unknown = [k for k in cond if k not in _CONDITION_KEYS]
        if not kinds and unknown:
            errors.append(
                problem_at(
                    parts + (unknown[0],),
                    f"unknown condition key '{unknown[0]}'",
                    valid=", ".join(_CONDITION_KEYS),
                    suggestion=closest(unknown[0], _CONDITION_KEYS),
                    at_key=True,
                )
            )
        else:
            errors.append(
                problem_at(
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
                problem_at(
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
            problem_at(
                parts + ("field",),
                f"unknown column '{name}'" if isinstance(name, str) else "expected a column name",
                found=name if not isinstance(name, str) else ...,
                valid=listing(FACT_COLUMNS, limit=200),
                suggestion=closest(name, list(FACT_COLUMNS)),
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
            problem_at(parts, f"expected {example}", found=value, valid="service and within_days")
        )
        return None
    unknown = [k for k in value if k not in ("service", "within_days")]
    if unknown:
        errors.append(
            problem_at(
                parts + (unknown[0],),
                f"unknown key '{unknown[0]}'",
                valid="service, within_days",
                suggestion=closest(unknown[0], ("service", "within_days")),
                at_key=True,
            )
        )
        return None
    raw = value["service"]
    services = raw if isinstance(raw, list) else [raw]
    ok = True
    if not services:
        errors.append(problem_at(parts + ("service",), "no service given", found=raw))
        return None
    for i, svc in enumerate(services):
        where = parts + ("service",) + ((i,) if isinstance(raw, list) else ())
        if not isinstance(svc, str) or svc not in context.services:
            errors.append(
                problem_at(
                    where,
                    "unknown service" if isinstance(svc, str) else "expected a service code",
                    found=svc,
                    valid=listing(context.services) + " (dbt_project/seeds/service_catalog.csv)",
                    suggestion=closest(svc, sorted(context.services)),
                )
            )
            ok = False
    within = value.get("within_days")
    if within is not None and not (is_int(within) and 1 <= within <= 3650):
        errors.append(
            problem_at(
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
            problem_at(
                parts,
                "expected {days: <window>, <operator>: <count>}",
                found=value,
                valid=f"days one of {valid_days}, e.g. {{days: 30, gte: 4}}",
            )
        )
        return None
    days = value["days"]
    if not is_int(days) or days not in windows:
        nearest = (
            min(windows, key=lambda d: abs(d - days))
            if isinstance(days, int | float) and not isinstance(days, bool)
            else None
        )
        errors.append(
            problem_at(
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
    if len(ops) != 1 or ops[0] not in OPS:
        bad = [o for o in ops if o not in OPS]
        if bad:
            errors.append(
                problem_at(
                    parts + (bad[0],),
                    f"unknown operator '{bad[0]}'",
                    valid=", ".join(allowed),
                    suggestion=closest(bad[0], allowed),
                    at_key=True,
                )
            )
        else:
            errors.append(
                problem_at(
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
            problem_at(
                where,
                f"'{name}' is {ftype}: operator '{op}' does not apply",
                valid=", ".join(allowed),
            )
        )
        return None
    word = _TYPE_WORDS[ftype]
    if op == "is_null":
        if not isinstance(value, bool):
            errors.append(problem_at(where, "is_null takes true or false", found=value))
            return None
        return Compiled(sql.SQL("{} is null" if value else "{} is not null").format(ident))
    if op == "between":
        coerced = [_coerce(ftype, v) for v in value] if isinstance(value, list) else []
        if len(coerced) != 2 or not all(ok for ok, _ in coerced):
            errors.append(
                problem_at(
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
                problem_at(
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
                problem_at(
                    where,
                    f"'{name}' {op} needs a list",
                    found=value,
                    valid=f"a non-empty list, each item {word}",
                )
            )
            return None
        values = [v for _, v in coerced]
        if not _known_values(name, values, where, errors):
            return None
        tmpl = "{} = any(%s)" if op == "in" else "not coalesce({} = any(%s), false)"
        return Compiled(sql.SQL(tmpl).format(ident), [values])
    if value is None:
        errors.append(
            problem_at(
                where, f"'{name}' {op} needs a value; for empty use is_null: true", found=value
            )
        )
        return None
    ok, bound = _coerce(ftype, value)
    if not ok:
        errors.append(
            problem_at(
                where,
                f"'{name}' is {ftype}; found {value!r} ({type(value).__name__})",
                valid=word,
            )
        )
        return None
    if not _known_values(name, [bound], where, errors):
        return None
    if _fields is not None and ftype in _ORDERED:
        _fields.append((name, op, bound, where))
    return Compiled(sql.SQL("{} " + _SQL_OP[op] + " %s").format(ident), [bound])


def _known_values(name: str, values: list, where: tuple, errors: list) -> bool:
    """False (and an error) when a column with a fixed set of values is compared with another."""
    valid = FACT_VALUES.get(name)
    unknown = [v for v in values if valid is not None and v not in valid]
    if unknown:
        errors.append(
            problem_at(
                where,
                f"'{name}' is never {unknown[0]!r}",
                valid=", ".join(valid or ()),
                suggestion=closest(unknown[0], valid or ()),
            )
        )
    return not unknown


def contradiction(conjuncts: list) -> tuple[tuple, str] | None:
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
