from __future__ import annotations

from pathlib import Path

import pytest

from lifecycle.rules import (
    RulesInvalid,
    compile_condition,
    in_control_group,
    load_rules,
    parse_rules,
)

RULES = Path(__file__).resolve().parents[2] / "include" / "rules" / "phases.yml"
TEXT = RULES.read_text()


def _errors(text: str) -> list:
    with pytest.raises(RulesInvalid) as exc:
        parse_rules(text, "phases.yml")
    return exc.value.errors


def _line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def test_default_rules_have_the_five_phases_in_priority_order():
    rules = load_rules(RULES)
    assert [p.name for p in rules.phases] == [
        "activation",
        "retention",
        "stimulation",
        "cross_sell",
        "return",
    ]
    ret = next(p for p in rules.phases if p.name == "return")
    assert [s.number for s in ret.steps] == [1, 2, 3]
    assert ret.steps[1].condition.params[-2:] == [60, 89]
    assert rules.policy.send_window.start.hour == 10


def test_unknown_column_is_located_with_a_suggestion():
    text = TEXT.replace("{field: visits_last_30d, gte: 4}", "{field: visits_last_30, gte: 4}", 1)
    (err,) = _errors(text)
    assert err.line == _line_of(text, "visits_last_30, gte")
    assert err.path == "phases[1].audience.all[1].field"
    assert "unknown column 'visits_last_30'" in err.message
    assert "did you mean 'visits_last_30d'" in err.message


def test_unknown_field_names_the_valid_ones():
    text = TEXT.replace("    priority: 2\n", "    priorty: 2\n", 1)
    errors = _errors(text)
    typo = next(e for e in errors if e.path == "phases[3].priorty")
    assert typo.line == _line_of(text, "priorty: 2")
    assert "did you mean 'priority'" in typo.message
    assert any(e.path == "phases[3].priority" and "required" in e.message for e in errors)


def test_all_condition_and_template_errors_at_once():
    text = (
        TEXT.replace(
            "{field: days_since_purchase, between: [20, 30]}",
            "{field: days_since_purchase, between: [30, 20]}",
            1,
        )
        .replace(
            "{field: visits_since_purchase, eq: 0}", "{field: visits_since_purchase, eq: none}", 1
        )
        .replace(
            "Try {{ offer.title }} on your next visit", "Try {{ ofer.title }} on your next visit", 1
        )
        .replace("{field: has_renewal, eq: false}", "{field: has_renewal, gte: false}", 1)
    )
    errors = _errors(text)
    messages = " | ".join(f"{e.path}: {e.message}" for e in errors)
    assert len(errors) == 4, messages
    assert "impossible window [30, 20]" in messages
    assert "'visits_since_purchase' is integer; found 'none'" in messages
    assert (
        "template variable 'ofer' does not exist" in messages and "did you mean 'offer'" in messages
    )
    assert "'has_renewal' is boolean: use eq or ne, not gte" in messages
    assert all(e.line is not None and e.file == "phases.yml" for e in errors)


def test_duplicate_key_and_bad_yaml_are_located():
    (dup,) = _errors("version: 1\nversion: 1\nphases: []\n")
    assert (dup.line, dup.path) == (2, "version")
    (bad,) = _errors("version: 1\nphases: [\n")
    assert bad.line is not None and "not valid YAML" in bad.message


def test_channel_without_template_is_an_error():
    sms_line = "take the next step: {{ offer.title }} this month."
    line = next(x for x in TEXT.splitlines(keepends=True) if sms_line in x)
    text = TEXT.replace(
        line,
        "",
        1,
    )
    (err,) = _errors(text)
    assert err.path == "phases[2].steps[0].templates"
    assert "channel 'sms'" in err.message


def test_condition_values_are_bound_parameters_never_sql():
    evil = "x'); drop table raw.customers; --"
    errors: list = []
    compiled = compile_condition({"field": "product", "in": [evil]}, "c", errors)
    assert errors == []
    text = compiled.sql.as_string(None)
    assert evil not in text and "drop" not in text
    assert compiled.params == [[evil]]
    assert text == '"product" = any(%s)'


def test_field_names_are_whitelisted_not_quoted_through():
    errors: list = []
    assert compile_condition({"field": 'product" or 1=1 --', "eq": "x"}, "c", errors) is None
    assert "unknown column" in errors[0][1]


def test_control_group_is_deterministic_and_about_the_configured_share():
    ids = [f"C{i:07d}" for i in range(20_000)]
    first = [in_control_group(c, 10, "salt") for c in ids]
    assert first == [in_control_group(c, 10, "salt") for c in ids]
    share = sum(first) / len(ids)
    assert 0.09 < share < 0.11
    other_salt = [in_control_group(c, 10, "other") for c in ids]
    assert first != other_salt
