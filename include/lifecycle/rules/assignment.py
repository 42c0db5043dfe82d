"""Who gets which variant and who is held back: stable hashes of the customer id.

The same customer keeps the same variant and control-group membership every day and across
rule edits that keep the salt.
"""

from __future__ import annotations

import hashlib

from lifecycle.rules.compiled import CompiledVariant


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
