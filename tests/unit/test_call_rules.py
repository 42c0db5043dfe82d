"""The call channel in the rules file: a step that calls needs a one-line script, capacities
are whole numbers >= 0, and errors name the place."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from lifecycle.rules.errors import RulesInvalid

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from test_plan_dispatch import rules_with as _parse  # noqa: E402 - the default rules, edited


def _errors(*replacements: tuple[str, str]) -> dict[str, str]:
    with pytest.raises(RulesInvalid) as exc:
        _parse(*replacements)
    return {e.path: str(e) for e in exc.value.errors}


def test_the_default_rules_call_in_the_last_return_step_and_its_repetitions():
    rules = _parse()
    ret = rules.phase("return")
    assert [ret.channels(s) for s in ret.steps] == [
        ("sms", "email"), ("sms", "email")] + [("call", "sms", "email")] * 4
    assert rules.policy.calls.capacity("main") == 30
    assert [(c.days, c.max) for c in rules.policy.channel_caps.call] == [(30, 1)]
    per_club = _parse(("per_club: {}", "per_club: {north: 5, south: 0}")).policy.calls
    assert (per_club.capacity("north"), per_club.capacity("south"),
            per_club.capacity("main")) == (5, 0, 30)


def test_a_phase_that_calls_without_a_call_script_is_an_error_at_its_templates():
    errors = _errors(("channels: [sms, email]\n    steps:\n      # An A/B",
                      "channels: [call, sms, email]\n    steps:\n      # An A/B"))
    assert set(errors) == {"phases[3].steps[0].variants[0].templates",
                           "phases[3].steps[0].variants[1].templates"}
    assert "channel 'call' is listed in channels but has no template" in \
        errors["phases[3].steps[0].variants[0].templates"]


def test_capacity_script_and_channel_errors_are_located():
    errors = _errors(
        ("capacity_per_day: 30", "capacity_per_day: -1"),
        ("per_club: {}", "per_club: {north: 2.5}"),
        ("channels: [call, sms, email]", "channels: [call, sms, call]"),
        ("call: \"Hello {{ first_name or 'there' }}, this is your club",
         "call: \"Hello {{ frist_name }},\\nthis is your club"),
    )
    assert "policy.calls.capacity_per_day" in errors
    assert "policy.calls.per_club.north" in errors
    assert "listed twice" in errors["phases[4].steps[2].channels"]
    assert "a call script is one line" in errors["phases[4].steps[2].templates.call"]
    one_line = _errors(("call: \"Hello {{ first_name or 'there' }}, this is your club",
                        "call: \"Hello {{ frist_name }}, this is your club"))
    assert "template variable 'frist_name' does not exist" in \
        one_line["phases[4].steps[2].templates.call"]
