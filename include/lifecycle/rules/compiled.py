"""The validated rules as the planner reads them: enabled phases by priority, compiled steps.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from lifecycle.rules.conditions import Compiled
from lifecycle.rules.models import (
    DEFAULT_VARIANT,
    DynamicOffer,
    Offer,
    Phase,
    Policy,
    RulesFile,
    Templates,
)

# --------------------------------------------------------------------------- compiled rules


@dataclass(frozen=True)
class CompiledVariant:
    name: str
    weight: float
    offer: Offer | DynamicOffer  # DynamicOffer: chosen per member (next_best_offer)
    templates: Templates


@dataclass
class CompiledStep:
    number: int
    offer: Offer | DynamicOffer
    templates: Templates  # of the first variant when the step has variants
    condition: Compiled  # audience AND when
    variants: list[CompiledVariant] = field(default_factory=list)
    # A repetition of a repeating step (``repeat``): the step it repeats, and its window
    repeats: int | None = None
    window: tuple[str, int, int] | None = None
    # The step's own channels (``channels`` on the step), else the phase's
    channels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.variants:
            self.variants = [CompiledVariant(DEFAULT_VARIANT, 1.0, self.offer, self.templates)]

    def label(self) -> str:
        """'step 4 (step 3 again: days_since_end 120-149)' for a repetition, else 'step 1'."""
        if self.repeats is None or self.window is None:
            return f"step {self.number}"
        field_name, lo, hi = self.window
        return f"step {self.number} (step {self.repeats} again: {field_name} {lo}-{hi})"


@dataclass
class CompiledPhase:
    phase: Phase
    steps: list[CompiledStep]

    def channels(self, step: CompiledStep) -> tuple[str, ...]:
        """The channels a step tries, in order of preference."""
        return step.channels or tuple(self.phase.channels)

    def uses_call(self) -> bool:
        return any("call" in self.channels(s) for s in self.steps)

    @property
    def name(self) -> str:
        return self.phase.name


@dataclass
class Rules:
    source: str
    model: RulesFile
    phases: list[CompiledPhase]  # enabled ones, by priority
    file: str = "<rules>"
    # policy.keep_alive as a pseudo-phase after every phase; None when off. Not in ``phases``:
    # its audience is not a customer_facts condition, and dbt's eligibility knows phases only.
    keep_alive: CompiledPhase | None = None

    @property
    def policy(self) -> Policy:
        return self.model.policy

    def phase(self, name: str) -> CompiledPhase | None:
        return next((p for p in self.phases if p.name == name), None)

    def uses_next_best_offer(self) -> bool:
        """Whether any enabled step's offer is chosen per member from customer_next_best_offer."""
        return any(
            isinstance(v.offer, DynamicOffer)
            for p in self.phases
            for s in p.steps
            for v in s.variants
        )

    def fingerprint(self) -> str:
        return hashlib.sha256(self.model.model_dump_json().encode()).hexdigest()[:12]
