"""The phase rules file: loading, validation with located errors, and compilation to SQL.

A rules file is YAML that marketers edit. Every error names the file, line and column, the path
inside the document (``phases[2].steps[0].templates.sms``), what was found and what would be
valid. Conditions are a small declarative grammar over the contracted columns of
``customer_facts``; they compile to SQL with bound parameters and whitelisted identifiers only.
"""

from __future__ import annotations

import difflib
import hashlib
import re
from dataclasses import dataclass, field
from datetime import time
from pathlib import Path
from typing import Any, Literal

import yaml
from jinja2 import StrictUndefined, TemplateSyntaxError, meta
from jinja2.sandbox import SandboxedEnvironment
from psycopg import sql
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from lifecycle.facts import FACT_COLUMNS, TEMPLATE_FIELDS

PHASE_NAMES = ("activation", "stimulation", "cross_sell", "retention", "return")
CHANNELS = ("sms", "email")

# --------------------------------------------------------------------------- errors


@dataclass(frozen=True)
class RuleError:
    file: str
    line: int | None
    column: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}:{self.column}"
        return f"{where}: {self.path or '<root>'}: {self.message}"


class RulesInvalid(Exception):
    def __init__(self, errors: list[RuleError]):
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))


def _suggest(found: str, valid: list[str] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(str(found), list(valid), n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    shown = (
        ", ".join(sorted(valid)) if len(valid) <= 12 else ", ".join(sorted(valid)[:12]) + ", ..."
    )
    return f"valid: {shown}{hint}"


# --------------------------------------------------------------------------- YAML with positions


def _path_str(parts: tuple[Any, ...]) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _compose_with_marks(text: str) -> tuple[Any, dict[tuple, tuple[int, int]]]:
    """Parse YAML into Python data plus a map path -> (line, column), 1-based."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
    finally:
        loader.dispose()
    marks: dict[tuple, tuple[int, int]] = {}

    def walk(n: yaml.Node, path: tuple) -> Any:
        marks[path] = (n.start_mark.line + 1, n.start_mark.column + 1)
        if isinstance(n, yaml.MappingNode):
            out = {}
            for k, v in n.value:
                key = k.value
                if key in out:
                    raise _DuplicateKey(key, k.start_mark.line + 1, k.start_mark.column + 1, path)
                out[key] = walk(v, path + (key,))
                # A key's value is located where the value starts, the key where the key is.
                marks[path + (key,)] = (v.start_mark.line + 1, v.start_mark.column + 1)
            return out
        if isinstance(n, yaml.SequenceNode):
            return [walk(v, path + (i,)) for i, v in enumerate(n.value)]
        return loader.construct_object(n, deep=True)

    if node is None:
        return None, {(): (1, 1)}
    return walk(node, ()), marks


class _DuplicateKey(Exception):
    def __init__(self, key: str, line: int, col: int, path: tuple):
        self.key, self.line, self.col, self.path = key, line, col, path


# --------------------------------------------------------------------------- models

_STRICT = ConfigDict(extra="forbid", strict=False)


class FrequencyCap(BaseModel):
    model_config = _STRICT
    days: int = Field(ge=1, le=365)
    max: int = Field(ge=0)


class SendWindow(BaseModel):
    model_config = _STRICT
    start: time = time(10, 0)
    end: time = time(20, 0)

    @field_validator("start", "end", mode="before")
    @classmethod
    def _hhmm(cls, v: Any) -> Any:
        if isinstance(v, int):  # YAML 1.1 reads 10:00 unquoted as sexagesimal 600
            return time(v // 60, v % 60)
        if isinstance(v, str) and not re.fullmatch(r"\d{1,2}:\d{2}", v):
            raise ValueError(f"expected a time like '10:00', found '{v}'")
        return v


class ControlGroup(BaseModel):
    model_config = _STRICT
    percent: float = Field(default=10, ge=0, le=100)
    salt: str = Field(default="lifecycle-control-v1", min_length=1)


class Policy(BaseModel):
    model_config = _STRICT
    max_messages_per_day: Literal[1] = 1
    frequency_caps: list[FrequencyCap] = Field(
        default_factory=lambda: [FrequencyCap(days=7, max=2), FrequencyCap(days=30, max=4)]
    )
    send_window: SendWindow = Field(default_factory=SendWindow)
    control_group: ControlGroup = Field(default_factory=ControlGroup)


class EmailTemplate(BaseModel):
    model_config = _STRICT
    subject: str = Field(min_length=1)
    body: str = Field(min_length=1)


class Templates(BaseModel):
    model_config = _STRICT
    sms: str | None = None
    email: EmailTemplate | None = None


class Offer(BaseModel):
    model_config = ConfigDict(extra="allow")
    code: str = Field(min_length=1, pattern=r"^[a-z0-9_]+$")
    title: str = Field(min_length=1)


class Step(BaseModel):
    model_config = _STRICT
    when: dict[str, Any] | None = None
    offer: Offer
    templates: Templates


class Phase(BaseModel):
    model_config = _STRICT
    name: Literal["activation", "stimulation", "cross_sell", "retention", "return"]
    description: str = ""
    enabled: bool = True
    priority: int = Field(ge=1)
    audience: dict[str, Any]
    channels: list[Literal["sms", "email"]] = Field(min_length=1)
    steps: list[Step] = Field(min_length=1)


class RulesFile(BaseModel):
    model_config = _STRICT
    version: Literal[1]
    policy: Policy = Field(default_factory=Policy)
    phases: list[Phase] = Field(min_length=1)


# --------------------------------------------------------------------------- conditions

_OPS = ("eq", "ne", "lt", "lte", "gt", "gte", "between", "in", "not_in", "is_null")
_SQL_OP = {"eq": "=", "ne": "<>", "lt": "<", "lte": "<=", "gt": ">", "gte": ">="}
_NUMERIC = ("integer", "numeric")


@dataclass
class Compiled:
    """A condition as SQL text with ``%s`` placeholders and its bound values."""

    sql: sql.Composable
    params: list[Any] = field(default_factory=list)


def _type_ok(ftype: str, value: Any) -> bool:
    if ftype in _NUMERIC:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if ftype == "boolean":
        return isinstance(value, bool)
    if ftype == "date":
        import datetime as _dt

        return isinstance(value, _dt.date)
    return isinstance(value, str)


def compile_condition(cond: Any, path: str, errors: list[tuple[str, str]]) -> Compiled | None:
    """Compile one condition; append (path, message) for each problem."""
    if not isinstance(cond, dict) or not cond:
        errors.append(
            (
                path,
                f"expected a condition mapping ({{field: ..., <op>: ...}}, all, any "
                f"or not), found {cond!r}",
            )
        )
        return None
    if "all" in cond or "any" in cond:
        key = "all" if "all" in cond else "any"
        extra = set(cond) - {key}
        if extra:
            errors.append((path, f"'{key}' stands alone; unexpected keys {sorted(extra)}"))
            return None
        items = cond[key]
        if not isinstance(items, list) or not items:
            errors.append((f"{path}.{key}", "expected a non-empty list of conditions"))
            return None
        parts = [compile_condition(c, f"{path}.{key}[{i}]", errors) for i, c in enumerate(items)]
        if any(p is None for p in parts):
            return None
        joiner = sql.SQL(" and " if key == "all" else " or ")
        return Compiled(
            sql.SQL("(") + joiner.join(p.sql for p in parts) + sql.SQL(")"),
            [v for p in parts for v in p.params],
        )
    if "not" in cond:
        if set(cond) != {"not"}:
            errors.append(
                (path, f"'not' stands alone; unexpected keys {sorted(set(cond) - {'not'})}")
            )
            return None
        inner = compile_condition(cond["not"], f"{path}.not", errors)
        if inner is None:
            return None
        return Compiled(sql.SQL("not coalesce(") + inner.sql + sql.SQL(", false)"), inner.params)
    if "field" not in cond:
        errors.append(
            (
                path,
                f"unknown condition keys {sorted(cond)}; "
                "valid: field (with one operator), all, any, not",
            )
        )
        return None
    name = cond["field"]
    if name not in FACT_COLUMNS:
        errors.append(
            (f"{path}.field", f"unknown column '{name}'; {_suggest(name, list(FACT_COLUMNS))}")
        )
        return None
    ops = [k for k in cond if k != "field"]
    if len(ops) != 1 or ops[0] not in _OPS:
        bad = [o for o in ops if o not in _OPS]
        what = (
            f"unknown operator '{bad[0]}'; {_suggest(bad[0], _OPS)}"
            if bad
            else (
                f"exactly one operator per condition, found {ops or 'none'}; "
                f"valid: {', '.join(_OPS)}"
            )
        )
        errors.append((path, what))
        return None
    op = ops[0]
    value = cond[op]
    ftype = FACT_COLUMNS[name]
    ident = sql.Identifier(name)
    where = f"{path}.{op}"
    if op == "is_null":
        if not isinstance(value, bool):
            errors.append((where, f"expected true or false, found {value!r}"))
            return None
        return Compiled(sql.SQL("{} is null" if value else "{} is not null").format(ident))
    if op == "between":
        if not (
            isinstance(value, list) and len(value) == 2 and all(_type_ok(ftype, v) for v in value)
        ):
            errors.append(
                (where, f"expected [low, high] of {ftype} values for '{name}', found {value!r}")
            )
            return None
        if value[0] > value[1]:
            errors.append((where, f"impossible window {value!r}: low is greater than high"))
            return None
        return Compiled(sql.SQL("{} between %s and %s").format(ident), list(value))
    if op in ("in", "not_in"):
        if not (isinstance(value, list) and value and all(_type_ok(ftype, v) for v in value)):
            errors.append(
                (
                    where,
                    f"expected a non-empty list of {ftype} values for '{name}', found {value!r}",
                )
            )
            return None
        tmpl = "{} = any(%s)" if op == "in" else "not coalesce({} = any(%s), false)"
        return Compiled(sql.SQL(tmpl).format(ident), [list(value)])
    if not _type_ok(ftype, value):
        errors.append((where, f"'{name}' is {ftype}; found {value!r} ({type(value).__name__})"))
        return None
    if ftype == "boolean" and op not in ("eq", "ne"):
        errors.append((where, f"'{name}' is boolean: use eq or ne, not {op}"))
        return None
    return Compiled(sql.SQL("{} " + _SQL_OP[op] + " %s").format(ident), [value])


# --------------------------------------------------------------------------- templates

_ENV = SandboxedEnvironment(
    undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False
)
TEMPLATE_VARIABLES = frozenset(TEMPLATE_FIELDS | {"offer"})


def _check_template(source: str, path: str, errors: list[tuple[str, str]]) -> None:
    try:
        parsed = _ENV.parse(source)
    except TemplateSyntaxError as exc:
        errors.append((path, f"template syntax error on its line {exc.lineno}: {exc.message}"))
        return
    for name in sorted(meta.find_undeclared_variables(parsed) - TEMPLATE_VARIABLES):
        errors.append(
            (
                path,
                f"template variable '{name}' does not exist; "
                f"{_suggest(name, sorted(TEMPLATE_VARIABLES))}",
            )
        )


def render(source: str, context: dict[str, Any]) -> str:
    """Render a message template in the sandbox (undefined names raise)."""
    return _ENV.from_string(source).render(**context).strip()


# --------------------------------------------------------------------------- loading


@dataclass
class CompiledStep:
    number: int
    offer: Offer
    templates: Templates
    condition: Compiled


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

    @property
    def policy(self) -> Policy:
        return self.model.policy

    def fingerprint(self) -> str:
        return hashlib.sha256(self.model.model_dump_json().encode()).hexdigest()[:12]


def _locate(marks: dict[tuple, tuple[int, int]], parts: tuple) -> tuple[int | None, int | None]:
    for n in range(len(parts), -1, -1):
        if parts[:n] in marks:
            return marks[parts[:n]]
    return None, None


def _parse_path(path: str) -> tuple:
    parts: list[Any] = []
    for m in re.finditer(r"([^.\[\]]+)|\[(\d+)\]", path):
        parts.append(int(m.group(2)) if m.group(2) is not None else m.group(1))
    return tuple(parts)


def load_rules(path: Path | str) -> Rules:
    """Read and validate a rules file; raise RulesInvalid with every error found."""
    path = Path(path)
    name = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RulesInvalid(
            [RuleError(name, None, None, "", f"cannot read the file: {exc.strerror}")]
        ) from None
    return parse_rules(text, name)


def parse_rules(text: str, name: str = "<rules>") -> Rules:
    try:
        data, marks = _compose_with_marks(text)
    except _DuplicateKey as dup:
        raise RulesInvalid(
            [
                RuleError(
                    name,
                    dup.line,
                    dup.col,
                    _path_str(dup.path + (dup.key,)),
                    f"key '{dup.key}' appears twice",
                )
            ]
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line, col = (mark.line + 1, mark.column + 1) if mark else (None, None)
        raise RulesInvalid(
            [RuleError(name, line, col, "", f"not valid YAML: {getattr(exc, 'problem', exc)}")]
        ) from None

    errors: list[RuleError] = []

    def err(parts: tuple, message: str) -> None:
        line, col = _locate(marks, parts)
        errors.append(RuleError(name, line, col, _path_str(parts), message))

    if not isinstance(data, dict):
        err((), "expected a mapping with keys version, policy, phases")
        raise RulesInvalid(errors)
    try:
        model = RulesFile.model_validate(data)
    except ValidationError as exc:
        for e in exc.errors():
            parts = tuple(e["loc"])
            # pydantic puts the union/literal branch in loc for some types; keep data keys only.
            parts = tuple(
                p for p in parts if not (isinstance(p, str) and p.startswith("function-"))
            )
            msg = e["msg"]
            if e["type"] == "extra_forbidden":
                parent = _model_fields_at(parts[:-1])
                msg = (
                    f"unknown field '{parts[-1]}'; {_suggest(str(parts[-1]), parent)}"
                    if parent
                    else msg
                )
            elif e["type"] == "literal_error":
                msg = f"found {e.get('input')!r}; {msg.replace('Input should be', 'expected')}"
            else:
                msg = (
                    f"{msg} (found {e.get('input')!r})"
                    if "input" in e and not isinstance(e["input"], dict | list)
                    else msg
                )
            err(parts, msg)
        raise RulesInvalid(errors) from None

    compiled_phases: list[CompiledPhase] = []
    seen: dict[str, int] = {}
    priorities: dict[int, str] = {}
    for i, phase in enumerate(model.phases):
        base = ("phases", i)
        if phase.name in seen:
            err(
                base + ("name",),
                f"phase '{phase.name}' is defined twice (also phases[{seen[phase.name]}])",
            )
        seen.setdefault(phase.name, i)
        if phase.enabled and phase.priority in priorities:
            err(
                base + ("priority",),
                f"priority {phase.priority} is also used by '{priorities[phase.priority]}'; "
                "each enabled phase needs its own",
            )
        priorities.setdefault(phase.priority, phase.name)
        if len(set(phase.channels)) != len(phase.channels):
            err(base + ("channels",), f"a channel is listed twice: {phase.channels}")
        cond_errors: list[tuple[str, str]] = []
        audience = compile_condition(phase.audience, _path_str(base + ("audience",)), cond_errors)
        steps: list[CompiledStep] = []
        for j, step in enumerate(phase.steps):
            sbase = base + ("steps", j)
            if len(phase.steps) > 1 and step.when is None:
                err(sbase, "a phase with several steps needs a 'when' condition on each step")
            step_cond = audience
            if step.when is not None:
                when = compile_condition(step.when, _path_str(sbase + ("when",)), cond_errors)
                if when is not None and audience is not None:
                    step_cond = Compiled(
                        sql.SQL("(") + audience.sql + sql.SQL(" and ") + when.sql + sql.SQL(")"),
                        audience.params + when.params,
                    )
            for ch in phase.channels:
                tmpl = getattr(step.templates, ch)
                if tmpl is None:
                    err(
                        sbase + ("templates",),
                        f"channel '{ch}' is listed in channels but has no template",
                    )
                elif ch == "sms":
                    _check_template(tmpl, _path_str(sbase + ("templates", "sms")), cond_errors)
                else:
                    _check_template(
                        tmpl.subject,
                        _path_str(sbase + ("templates", "email", "subject")),
                        cond_errors,
                    )
                    _check_template(
                        tmpl.body, _path_str(sbase + ("templates", "email", "body")), cond_errors
                    )
            if step_cond is not None:
                steps.append(CompiledStep(j + 1, step.offer, step.templates, step_cond))
        for p, message in cond_errors:
            err(_parse_path(p), message)
        if phase.enabled:
            compiled_phases.append(CompiledPhase(phase, steps))
    if errors:
        raise RulesInvalid(errors)
    compiled_phases.sort(key=lambda cp: cp.phase.priority)
    return Rules(text, model, compiled_phases)


def _model_fields_at(parts: tuple) -> list[str]:
    """Field names valid at a document path, for 'did you mean'."""
    model: Any = RulesFile
    for p in parts:
        if isinstance(p, int):
            continue
        info = getattr(model, "model_fields", {}).get(p)
        if info is None:
            return []
        ann = info.annotation
        inner = [
            a
            for a in getattr(ann, "__args__", ())
            if isinstance(a, type) and issubclass(a, BaseModel)
        ]
        model = (
            ann
            if isinstance(ann, type) and issubclass(ann, BaseModel)
            else (inner[0] if inner else None)
        )
        if model is None:
            return []
    return list(getattr(model, "model_fields", {}))


# --------------------------------------------------------------------------- control group


def in_control_group(customer_id: str, percent: float, salt: str) -> bool:
    """Deterministic by hashed customer id and salt: stable across days and rule edits."""
    digest = hashlib.sha256(f"{salt}:{customer_id}".encode()).digest()
    bucket = int.from_bytes(digest[:8], "big") / 2**64
    return bucket < percent / 100.0
