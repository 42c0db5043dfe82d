"""The semantic walk over the raw document: what needs more than one field to check.

Conditions compile, templates render, priorities and variant names are unique, windows make
sense. It runs on the raw data, so a typo in one place does not hide a mistake in another.
"""

from __future__ import annotations

from typing import Any

from psycopg import sql
from pydantic import (
    ValidationError,
)

from lifecycle.rules.conditions import (
    CompileContext,
    Compiled,
    compile_condition,
    contradiction,
    is_int,
)
from lifecycle.rules.errors import Problem, problem_at
from lifecycle.rules.models import (
    CHANNELS,
    DEFAULT_VARIANT,
    MAX_REPEAT_STEPS,
    PHASE_NAMES,
    REPEATABLE_FIELDS,
    DynamicOffer,
    Offer,
    SendWindow,
)
from lifecycle.rules.templates import check_template

# ---- the semantic walk over the raw document


def _valid_offer(raw: Any) -> list[dict[str, Any]] | None:
    """Every offer a template of this step may see: one, or (next_best_offer) each catalog
    entry and the fallback. None when the offer is not valid (the models report why)."""
    try:
        if isinstance(raw, dict) and "from" in raw:
            return DynamicOffer.model_validate(raw).choices()
        return [Offer.model_validate(raw).model_dump()]
    except ValidationError:
        return None


class Semantics:
    """Conditions, templates and cross-field rules, checked on the raw data.

    Runs whether or not the models validated, so every mistake is reported in one go; values
    of the wrong type are skipped here (the models already report them).
    """

    def __init__(self, data: dict[str, Any], problems: list[Problem], context: CompileContext):
        self.data = data
        self.problems = problems
        self.context = context
        self.step_conditions: dict[tuple[int, int], Compiled] = {}
        # phase index -> the repetitions of its last step: (window, condition) each
        self.repetitions: dict[int, list[tuple[tuple[str, int, int], Compiled]]] = {}

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
                        problem_at(
                            base + ("name",),
                            f"phase '{name}' is defined twice (also phases[{names[name]}])",
                            valid=f"each of {', '.join(PHASE_NAMES)} at most once",
                        )
                    )
                names.setdefault(name, i)
            priority = phase.get("priority")
            if is_int(priority) and phase.get("enabled", True) is True:
                if priority in priorities:
                    self.add(
                        problem_at(
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
        self.check_keep_alive(policy.get("keep_alive"))
        window = policy.get("send_window")
        if isinstance(window, dict):
            try:
                w = SendWindow.model_validate(window)
            except ValidationError:
                return
            if w.start >= w.end:
                self.add(
                    problem_at(
                        ("policy", "send_window"),
                        f"the send window closes ({w.end:%H:%M}) before it opens ({w.start:%H:%M})",
                        valid="start earlier than end, like 10:00-20:00",
                    )
                )

    def check_channels(self, raw: Any, parts: tuple) -> list[str]:
        """The known channels of a ``channels`` list, each once (a repeat is a problem)."""
        channels: list[str] = []
        if isinstance(raw, list):
            for c in raw:
                if isinstance(c, str) and c in CHANNELS:
                    if c in channels:
                        self.add(problem_at(parts, f"channel '{c}' is listed twice"))
                    else:
                        channels.append(c)
        return channels

    def check_phase(self, phase: dict[str, Any], base: tuple) -> None:
        channels = self.check_channels(phase.get("channels"), base + ("channels",))
        seg = phase.get("max_sms_segments", 2)
        sms_limit = seg if is_int(seg) and 1 <= seg <= 10 else None

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
                bad = contradiction(audience_fields)
                if bad:
                    self.add(
                        problem_at(
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
                    problem_at(
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
                    bad = contradiction(audience_fields + when_fields)
                    if bad:
                        self.add(
                            problem_at(
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
            if step.get("repeat") is not None:
                self.check_repeat(step, sbase, j, len(steps), audience)
            # the channels the step's texts must cover: its own, else the phase's
            own = step.get("channels")
            step_channels = (self.check_channels(own, sbase + ("channels",))
                             if isinstance(own, list) else channels)
            self.check_step_texts(step, sbase, step_channels, sms_limit)

    def check_repeat(
        self, step: dict[str, Any], sbase: tuple, j: int, n_steps: int, audience: Compiled | None
    ) -> None:
        """A repeating step: the last one, its window a day count's `between`, repetitions that
        do not overlap; records each repetition's condition (audience AND the moved window)."""
        repeat = step["repeat"]
        if j != n_steps - 1:
            self.add(
                problem_at(
                    sbase + ("repeat",),
                    f"only the last step of a phase can repeat (this is step {j + 1} of {n_steps})",
                    valid="move 'repeat' to the last step",
                )
            )
            return
        when = step.get("when")
        example = "when: {field: days_since_end, between: [90, 119]}"
        window = None
        if (
            isinstance(when, dict)
            and set(when) == {"field", "between"}
            and when["field"] in REPEATABLE_FIELDS
            and isinstance(when["between"], list)
            and len(when["between"]) == 2
            and all(is_int(v) for v in when["between"])
            and 0 <= when["between"][0] <= when["between"][1]
        ):
            window = (when["field"], when["between"][0], when["between"][1])
        else:
            self.add(
                problem_at(
                    sbase + (("when",) if when is not None else ("repeat",)),
                    "a repeating step needs a window to move: its 'when' must be one "
                    f"'between' on a day count ({', '.join(REPEATABLE_FIELDS)})",
                    valid=f"e.g. {example}",
                )
            )
        if not isinstance(repeat, dict):
            return  # the model reports it
        every, most = repeat.get("every_days"), repeat.get("max_steps")
        if not (is_int(every) and is_int(most)) or every < 1 or not 2 <= most <= MAX_REPEAT_STEPS:
            return  # the model reports it
        if most <= n_steps:
            self.add(
                problem_at(
                    sbase + ("repeat", "max_steps"),
                    f"max_steps {most} leaves nothing to repeat: the phase already has "
                    f"{n_steps} step(s)",
                    found=most,
                    valid=f"{n_steps + 1} to {MAX_REPEAT_STEPS}",
                )
            )
            return
        if window is None:
            return
        field, lo, hi = window
        if every < hi - lo + 1:
            self.add(
                problem_at(
                    sbase + ("repeat", "every_days"),
                    f"repetitions would overlap: the window [{lo}, {hi}] is {hi - lo + 1} days "
                    f"long, longer than every_days {every}",
                    found=every,
                    valid=f"at least {hi - lo + 1}, or a shorter window",
                )
            )
            return
        if audience is None:
            return
        out = []
        for k in range(1, most - n_steps + 1):
            moved = {"field": field, "between": [lo + k * every, hi + k * every]}
            cond = compile_condition(moved, sbase + ("when",), self.problems, context=self.context)
            if cond is None:
                return
            out.append(
                (
                    (field, lo + k * every, hi + k * every),
                    Compiled(
                        sql.SQL("(") + audience.sql + sql.SQL(" and ") + cond.sql + sql.SQL(")"),
                        audience.params + cond.params,
                    ),
                )
            )
        self.repetitions[sbase[1]] = out

    def check_step_texts(
        self, step: dict[str, Any], sbase: tuple, channels: list[str], sms_limit: int | None
    ) -> None:
        offer = _valid_offer(step.get("offer"))
        has_t, has_v = step.get("templates") is not None, step.get("variants") is not None
        if has_t == has_v:
            self.add(
                problem_at(
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
                    self.add(problem_at(vbase + ("name",), f"variant '{vname}' is defined twice"))
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
                problem_at(
                    sbase + ("variants",),
                    "the variants' weights add up to 0: nobody would get a message",
                    valid="at least one weight above 0",
                )
            )

    def check_keep_alive(self, keep_alive: Any) -> None:
        """The keep-alive message's texts, as a phase step's are checked."""
        if not isinstance(keep_alive, dict) or not isinstance(keep_alive.get("templates"), dict):
            return
        raw = keep_alive.get("channels")
        channels = [c for c in raw if c in ("sms", "email")] if isinstance(raw, list) else []
        seg = keep_alive.get("max_sms_segments", 2)
        self.check_templates(
            keep_alive["templates"],
            ("policy", "keep_alive", "templates"),
            channels,
            _valid_offer(keep_alive.get("offer")),
            DEFAULT_VARIANT,
            seg if is_int(seg) and 1 <= seg <= 10 else None,
        )

    def check_templates(
        self,
        templates: Any,
        tbase: tuple,
        channels: list[str],
        offers: list[dict[str, Any]] | None,
        variant: str,
        sms_limit: int | None,
    ) -> None:
        if not isinstance(templates, dict):
            return
        for ch in channels:
            if templates.get(ch) is None:
                self.add(
                    problem_at(
                        tbase,
                        f"channel '{ch}' is listed in channels but has no template",
                        valid=f"add templates.{ch}, or remove '{ch}' from channels",
                    )
                )
        # Every text given is checked, listed channel or not: it may be listed tomorrow. With a
        # next-best offer, against each offer a member may get (one report per problem).
        found: list[Problem] = []
        for k, offer in enumerate(offers or [None]):
            if k:  # a later offer adds problems only where the earlier ones found none
                seen = {p.parts for p in found}
                found_before, found = found, []
            text = templates.get("sms")
            if isinstance(text, str) and text:
                check_template(
                    text,
                    tbase + ("sms",),
                    found,
                    offer=offer,
                    variant=variant,
                    sms_limit=sms_limit,
                )
            script = templates.get("call")
            if isinstance(script, str) and script:
                if "\n" in script.strip():
                    found.append(
                        problem_at(
                            tbase + ("call",),
                            "a call script is one line (the caller reads it from the call list)",
                            valid="one line of text, like 'Offer {{ first_name }} ...'",
                        )
                    )
                else:
                    check_template(
                        script, tbase + ("call",), found, offer=offer, variant=variant
                    )
            email = templates.get("email")
            if isinstance(email, dict):
                for part in ("subject", "body"):
                    if isinstance(email.get(part), str) and email[part]:
                        check_template(
                            email[part],
                            tbase + ("email", part),
                            found,
                            offer=offer,
                            variant=variant,
                        )
            if k:
                found = found_before + [p for p in found if p.parts not in seen]
        for problem in found:
            if problem not in self.problems:
                self.add(problem)
