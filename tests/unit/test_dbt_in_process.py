"""lifecycle.transform.dbt.cheap_behavior_flag_source: dbt's answer, without walking the stack."""

from __future__ import annotations

import inspect

import pytest
from dbt_common import behavior_flags

from lifecycle.transform.dbt import before_dbt_task, cheap_behavior_flag_source

FLAG = {"name": "some_flag", "default": False, "description": "a flag for the test"}
# dbt's own, taken when pytest imports this module: before any test of the session has run
# the DAG's hook or lifecycle simulate in this process, which replace it
DBT_DEFAULT_SOURCE = behavior_flags.BehaviorFlagRendered.__dict__["_default_source"]


def _declared_source() -> str:
    # as an adapter declares its flags: Behavior(...) called from the adapter's module
    behavior = behavior_flags.Behavior([FLAG], {})
    return behavior.some_flag._behavior_change_event.flag_source


@pytest.fixture
def restore_default_source():
    """dbt's own lookup for the test, whatever ran before; the process's as it was after."""
    before = behavior_flags.BehaviorFlagRendered.__dict__["_default_source"]
    behavior_flags.BehaviorFlagRendered._default_source = DBT_DEFAULT_SOURCE
    yield
    behavior_flags.BehaviorFlagRendered._default_source = before


def test_the_flag_source_is_the_declaring_module_as_dbt_says(restore_default_source, monkeypatch):
    expected = _declared_source()  # dbt's own, through inspect.stack()
    assert expected == __name__

    def no_stack(*args, **kwargs):
        raise AssertionError("inspect.stack() was called")

    cheap_behavior_flag_source()
    monkeypatch.setattr(inspect, "stack", no_stack)
    assert _declared_source() == expected
    cheap_behavior_flag_source()  # a second call (every dbt task calls it) changes nothing
    assert _declared_source() == expected


def test_the_dag_hook_applies_it(restore_default_source, monkeypatch):
    def no_stack(*args, **kwargs):
        raise AssertionError("inspect.stack() was called")

    monkeypatch.setattr(inspect, "stack", no_stack)
    with pytest.raises(AssertionError, match="inspect.stack"):
        _declared_source()
    before_dbt_task({})
    assert _declared_source() == __name__
