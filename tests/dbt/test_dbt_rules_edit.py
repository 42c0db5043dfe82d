"""A marketer's rules edit touches the YAML only: dbt's unit tests and dbt's copy of the phases
follow the rules file in use, nothing generated from it is committed (docs/architecture.md #1).
"""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import pytest
import yaml

from lifecycle.rules.loading import load_rules
from lifecycle.settings import Settings
from lifecycle.transform.dbt import run_dbt
from lifecycle.transform.dbt_vars import VAR_NAME, phase_vars

PROJECT = Path(__file__).resolve().parents[2]
RULES = PROJECT / "include" / "rules" / "phases.yml"
DBT_PROJECT = PROJECT / "dbt_project" / "dbt_project.yml"

pytestmark = pytest.mark.slow


def _edited_rules(tmp_path: Path) -> tuple[Path, list[tuple[str, str]]]:
    """A copy of the shipped rules file with two windows moved, as a marketer would.

    Returns the copy and, per moved window, its SQL before and after (whatever the shipped
    windows are today: this test must not break on a rules edit either).
    """
    text = RULES.read_text(encoding="utf-8")
    moved = []
    for field, (d_lo, d_hi) in (("days_since_purchase", (-2, 0)), ("days_until_end", (-4, -5))):
        found = re.search(r"\{field: " + field + r", between: \[(\d+), (\d+)\]\}", text)
        assert found, f"the shipped rules have no window on {field} any more: pick another"
        lo, hi = int(found[1]), int(found[2])
        new_lo, new_hi = max(lo + d_lo, 0), max(hi + d_hi, max(lo + d_lo, 0))
        text = text.replace(found[0], f"{{field: {field}, between: [{new_lo}, {new_hi}]}}")
        sql = f'"{field}" between '
        moved.append((f"{sql}{lo} and {hi}", f"{sql}{new_lo} and {new_hi}"))
    edited = tmp_path / "phases.yml"
    edited.write_text(text, encoding="utf-8")
    return edited, moved


def test_an_edited_window_passes_the_dbt_unit_tests_and_reaches_dbt(fresh_db, tmp_path):
    edited, moved = _edited_rules(tmp_path)
    settings = Settings(rules_file=edited)

    # Unit tests read the columns of their inputs from the warehouse: build them (no data) first.
    quiet = ["--exclude", "resource_type:test", "resource_type:unit_test"]
    run_dbt(fresh_db, ["build", *quiet], settings=settings, target_path=tmp_path / "empty",
            as_of=date(2026, 6, 30))
    # The unit tests with the edited phases, passed as `lifecycle run` and the DAG pass them:
    # each unit test pins the windows it tests, so it does not care (DbtError otherwise).
    result = run_dbt(
        fresh_db,
        ["test", "--select", "test_type:unit"],
        settings=settings,
        target_path=tmp_path / "unit",
        dbt_vars=phase_vars(load_rules(edited)),
    )
    assert "ERROR=0" in result.stdout.replace(" ", "")
    lines = result.stdout.splitlines()
    passed = [line for line in lines if "PASS" in line and "eligibility_" in line]
    assert len(passed) >= 6, result.stdout[-3000:]

    # A run that does not pass the var gets the rules file in use, not a committed copy.
    run_dbt(
        fresh_db,
        ["compile", "--select", "customer_phase_eligibility"],
        settings=settings,
        target_path=tmp_path / "compile",
    )
    (compiled,) = (tmp_path / "compile" / "compiled").rglob("customer_phase_eligibility.sql")
    sql = compiled.read_text(encoding="utf-8")
    for before, after in moved:
        assert after in sql
        assert before not in sql


def test_nothing_generated_from_the_rules_file_is_committed():
    project_vars = yaml.safe_load(DBT_PROJECT.read_text(encoding="utf-8"))["vars"]
    assert VAR_NAME not in project_vars
    for path in (PROJECT / "dbt_project").rglob("*.yml"):
        if {"target", "logs", "dbt_packages"} & set(path.relative_to(PROJECT).parts):
            continue
        assert "BEGIN generated" not in path.read_text(encoding="utf-8"), path
