"""The JSON Schema of the rules file, for editors (``include/rules/phases.schema.json``).
"""

from __future__ import annotations

import copy
import json
from typing import Any

from lifecycle.rules.conditions import OPS, visit_windows
from lifecycle.rules.models import CONDITION_MARK, RulesFile
from lifecycle.warehouse.facts import FACT_COLUMNS

# --------------------------------------------------------------------------- JSON Schema


def _condition_schema() -> dict[str, Any]:
    ref = {"$ref": "#/$defs/Condition"}
    columns = sorted(FACT_COLUMNS)
    op_props: dict[str, Any] = {op: {} for op in OPS}
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
            if node.get(CONDITION_MARK):
                rest = {k: v for k, v in node.items() if k != CONDITION_MARK}
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
