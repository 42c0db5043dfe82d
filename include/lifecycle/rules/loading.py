"""Reading a rules file: YAML, then the models, then the semantic checks; every error at once.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml
from psycopg import sql
from pydantic import (
    BaseModel,
    ValidationError,
)

from lifecycle.rules.checks import Semantics
from lifecycle.rules.compiled import CompiledPhase, CompiledStep, CompiledVariant, Rules
from lifecycle.rules.conditions import Compiled, default_context
from lifecycle.rules.errors import ROOT, Problem, RuleError, RulesInvalid, closest, problem_at
from lifecycle.rules.models import KEEP_ALIVE, Conversion, DynamicOffer, Phase, RulesFile
from lifecycle.rules.yamldoc import DocumentTooLarge, compose_with_marks, locate_all, yaml_error

# --------------------------------------------------------------------------- loading


def _size(n: int) -> str:
    return f"{n:,} bytes".replace(",", " ")


def load_rules(
    path: Path | str, *, schema: str | None = None, max_bytes: int | None = None
) -> Rules:
    """Read and validate a rules file; raise RulesInvalid with every error found.

    A file over ``max_bytes`` (default: settings.rules_file_max_bytes) is refused before it
    is read whole: at most ``max_bytes`` + 1 bytes are ever read.
    """
    path = Path(path)
    name = str(path)
    if max_bytes is None:
        from lifecycle.settings import get_settings

        max_bytes = get_settings().rules_file_max_bytes
    try:
        with path.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            data = b"" if size > max_bytes else f.read(max_bytes + 1)
        if size > max_bytes or len(data) > max_bytes:
            found = _size(size) if size > max_bytes else f"more than {_size(max_bytes)}"
            raise RulesInvalid([RuleError(
                name, None, None, ROOT,
                f"the file is too large: {found}, the limit is {_size(max_bytes)} "
                "(LIFECYCLE_RULES_FILE_MAX_BYTES); a rules file is a few kilobytes of YAML",
                found=found, valid=f"at most {_size(max_bytes)}",
            )])
        text = data.decode("utf-8")
    except OSError as exc:
        raise RulesInvalid(
            [RuleError(name, None, None, ROOT, f"cannot read the file: {exc.strerror or exc}")]
        ) from None
    except UnicodeDecodeError as exc:
        raise RulesInvalid(
            [RuleError(name, None, None, ROOT, f"the file is not UTF-8 text: {exc.reason}")]
        ) from None
    return parse_rules(text, name, schema=schema)


def parse_rules(text: str, name: str = "<rules>", *, schema: str | None = None) -> Rules:
    """Validate rules given as text (``name`` is used in errors).

    ``schema``: where dbt builds the marts (default: settings.dbt_schema), for conditions that
    read a mart besides customer_facts.
    """
    try:
        doc = compose_with_marks(text)
    except yaml.YAMLError as exc:
        raise RulesInvalid([yaml_error(name, text, exc)]) from None
    except UnicodeError as exc:  # a lone surrogate in a str handed to parse_rules
        raise RulesInvalid(
            [RuleError(name, None, None, ROOT, f"not valid text: {exc.reason}")]
        ) from None
    except DocumentTooLarge:
        raise RulesInvalid(
            [RuleError(name, 1, 1, ROOT, "the document is too large (aliases expanding?)")]
        ) from None
    problems = list(doc.problems)
    data = doc.data
    if not isinstance(data, dict):
        problems.append(
            problem_at(
                (),
                "expected a mapping with the keys version, policy and phases",
                found=data,
            )
        )
        raise RulesInvalid(locate_all(name, doc, problems))

    model: RulesFile | None = None
    try:
        model = RulesFile.model_validate(data)
    except ValidationError as exc:
        problems.extend(_pydantic_problems(exc))
    compiled = Semantics(data, problems, default_context(schema))
    compiled.check()
    if problems or model is None:
        raise RulesInvalid(locate_all(name, doc, problems))

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
                    CompiledStep(j + 1, step.offer, variants[0].templates, condition, variants,
                                 channels=tuple(step.channels or ()))
                )
            else:
                assert step.templates is not None  # checked by Semantics
                steps.append(CompiledStep(j + 1, step.offer, step.templates, condition,
                                          channels=tuple(step.channels or ())))
        # the last step's repetitions: steps of their own, numbered on (their own keys)
        last = steps[-1]
        for k, (window, condition) in enumerate(compiled.repetitions.get(i, []), start=1):
            steps.append(
                CompiledStep(
                    last.number + k,
                    last.offer,
                    last.templates,
                    condition,
                    list(last.variants),
                    repeats=last.number,
                    window=window,
                    channels=last.channels,
                )
            )
        if phase.enabled:
            phases.append(CompiledPhase(phase, steps))
    phases.sort(key=lambda cp: cp.phase.priority)
    return Rules(text, model, phases, name, keep_alive_phase(model))


def keep_alive_phase(model: RulesFile) -> CompiledPhase | None:
    """policy.keep_alive as a phase named keep_alive with one step, ranked after every phase;
    None when it is off. Its audience is chosen by planning.audience.select_keep_alive."""
    ka = model.policy.keep_alive
    if ka is None or not ka.enabled:
        return None
    # Not validated as a Phase: its name is not a lifecycle phase's and it has no audience.
    phase = Phase.model_construct(
        name=KEEP_ALIVE,
        description="keep-alive",
        enabled=True,
        priority=max((p.priority for p in model.phases), default=0) + 1,
        audience=None,
        channels=list(ka.channels),
        steps=[],
        max_sms_segments=ka.max_sms_segments,
        frequency_caps=[],
        repeat="once_per_customer",
        conversion=Conversion(),
    )
    step = CompiledStep(1, ka.offer, ka.templates, Compiled(sql.SQL("true")))
    return CompiledPhase(phase, [step])


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
                problem_at(
                    parts,
                    f"unknown field '{field_name}'",
                    valid=", ".join(valid) if valid else None,
                    suggestion=closest(str(field_name), valid),
                    at_key=True,
                )
            )
        elif typ == "missing":
            info = _field_info_at(parts)
            desc = info.description if info is not None and info.description else None
            out.append(problem_at(parts, f"required field '{field_name}' is missing", valid=desc))
        elif typ == "literal_error":
            choices = re.findall(r"'([^']*)'", str(ctx.get("expected", ""))) or [
                str(ctx.get("expected", ""))
            ]
            out.append(
                problem_at(
                    parts,
                    "not one of the choices",
                    found=inp,
                    valid=", ".join(choices),
                    suggestion=closest(inp, choices),
                )
            )
        elif typ in _VALID_BY_TYPE:
            out.append(
                problem_at(
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
                problem_at(
                    parts, f"'{field_name}' is out of range", found=inp, valid=f"{sym} {bound}"
                )
            )
        elif typ in ("too_short", "string_too_short"):
            n = ctx.get("min_length", 1)
            what = "item(s)" if typ == "too_short" else "character(s)"
            out.append(
                problem_at(
                    parts, f"'{field_name}' is too short", found=inp, valid=f"at least {n} {what}"
                )
            )
        elif typ == "string_pattern_mismatch":
            out.append(
                problem_at(
                    parts,
                    f"'{field_name}' has characters that are not allowed",
                    found=inp,
                    valid=f"text matching {ctx.get('pattern')}",
                )
            )
        elif typ == "value_error":
            out.append(problem_at(parts, str(ctx.get("error", e["msg"])), found=inp))
        else:
            out.append(problem_at(parts, e["msg"], found=inp))
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


# ---- next-best offers against the club's services (known only with a warehouse)


def offer_service_problems(rules: Rules, services: set[str]) -> list[RuleError]:
    """Catalog entries of ``from: next_best_offer`` offers that name no service of the club,
    located in the rules file. ``services``: the codes the club's catalog holds (on D)."""
    problems: list[Problem] = []
    valid = sorted(services)
    for i, phase in enumerate(rules.model.phases):
        for j, step in enumerate(phase.steps):
            offers = [(("phases", i, "steps", j, "offer"), step.offer)]
            for k, v in enumerate(step.variants or []):
                offers.append((("phases", i, "steps", j, "variants", k, "offer"), v.offer))
            for base, offer in offers:
                if not isinstance(offer, DynamicOffer):
                    continue
                for code in offer.catalog:
                    if code not in services:
                        problems.append(
                            problem_at(
                                base + ("catalog", code),
                                f"service '{code}' is not in the club's services",
                                valid=", ".join(valid) if valid else "(the club has no services)",
                                suggestion=closest(code, valid),
                                at_key=True,
                            )
                        )
    if not problems:
        return []
    return locate_all(rules.file, compose_with_marks(rules.source), problems)
