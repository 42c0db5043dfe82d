"""The lifecycle_phases dbt var: generated from the rules file in use at each run, not committed."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from lifecycle.pipeline import rules_for_dbt
from lifecycle.rules.loading import load_rules, parse_rules
from lifecycle.settings import Settings
from lifecycle.transform.dbt import _with_vars, with_phases
from lifecycle.transform.dbt_vars import (
    VAR_NAME,
    main,
    phase_config,
    phase_vars,
    render_condition,
)

PROJECT = Path(__file__).resolve().parents[2]
RULES = PROJECT / "include" / "rules" / "phases.yml"
DBT_PROJECT = PROJECT / "dbt_project" / "dbt_project.yml"
DBT_MODELS = PROJECT / "dbt_project" / "models"

# The windows the dbt unit tests pin (their `overrides: vars:`), as a rules file: a fixture of
# these tests, not include/rules/phases.yml, which marketers edit.
PINNED_RULES = """
version: 1
phases:
  - name: activation
    priority: 1
    audience:
      all:
        - {field: days_since_purchase, between: [20, 30]}
        - {field: membership_status, not_in: [cancelled]}
        - {field: visits_since_purchase, eq: 0}
    channels: [sms]
    steps: [{offer: {code: intro, title: intro}, templates: {sms: hi}}]
  - name: retention
    priority: 2
    audience:
      all:
        - {field: days_until_end, between: [14, 45]}
        - {field: has_renewal, eq: false}
        - {field: membership_status, not_in: [cancelled]}
    channels: [sms]
    steps: [{offer: {code: renew, title: renew}, templates: {sms: hi}}]
  - name: stimulation
    priority: 3
    audience:
      all:
        - {field: days_since_purchase, between: [60, 90]}
        - {visits_in_last: {days: 30, gte: 4}}
        - {field: addon_purchases_since_purchase, eq: 0}
    channels: [sms]
    steps: [{offer: {code: addon, title: addon}, templates: {sms: hi}}]
  - name: cross_sell
    priority: 4
    audience:
      all:
        - {field: days_since_purchase, gt: 90}
        - {visits_in_last: {days: 30, gte: 4}}
        - {field: cross_sell_purchases_last_90d, eq: 0}
        - not: {field: days_until_end, between: [14, 45]}
    channels: [sms]
    steps: [{offer: {code: spa, title: spa}, templates: {sms: hi}}]
  - name: return
    priority: 5
    audience:
      all:
        - {field: has_active_membership, eq: false}
        - {field: has_renewal, eq: false}
    channels: [sms]
    steps:
      - when: {field: days_since_end, between: [30, 59]}
        offer: {code: r1, title: r1}
        templates: {sms: hi}
      - when: {field: days_since_end, between: [60, 89]}
        offer: {code: r2, title: r2}
        templates: {sms: hi}
      - when: {field: days_since_end, between: [90, 119]}
        offer: {code: r3, title: r3}
        templates: {sms: hi}
"""

ODD_RULES = """
version: 1
phases:
  - name: retention
    priority: 2
    audience:
      all:
        - {field: product, in: ["gym's 12m", "a,b", "NULL", "{{ x }}", 'back\\slash', "50%s"]}
        - {field: membership_status, ne: "it's"}
        - {field: has_renewal, eq: false}
        - {field: lifetime_revenue, gte: 1200.5}
        - {field: ends_on, is_null: false}
        - not: {field: days_until_end, between: [14, 45]}
    channels: [sms]
    steps:
      - offer: {code: renew, title: "renew"}
        templates: {sms: "hi"}
  - name: cross_sell
    priority: 4
    audience:
      all:
        - {field: days_since_purchase, gt: 90}
        - not: {bought_service: {service: massage, within_days: 90}}
    channels: [sms]
    steps:
      - offer: {code: spa, title: "spa"}
        templates: {sms: "hi"}
  - name: activation
    enabled: false
    priority: 1
    audience: {field: days_since_purchase, between: [20, 30]}
    channels: [sms]
    steps:
      - offer: {code: intro, title: "intro"}
        templates: {sms: "hi"}
"""


def _pinned_phases() -> list[tuple[str, dict]]:
    """(unit test, phase) for every phase a dbt unit test pins in its overrides."""
    found = []
    for path in sorted(DBT_MODELS.rglob("*.yml")):
        for test in yaml.safe_load(path.read_text(encoding="utf-8")).get("unit_tests", []):
            pinned = ((test.get("overrides") or {}).get("vars") or {}).get(VAR_NAME)
            if isinstance(pinned, str):
                pinned = json.loads(pinned)
            found += [(test["name"], phase) for phase in (pinned or {}).get("phases", [])]
    return found


def test_the_dbt_unit_tests_pin_the_compilers_conditions():
    """What a unit test pins is what the compiler makes of the window it names."""
    config = phase_config(parse_rules(PINNED_RULES, "pinned.yml"))
    compiled = {p["name"]: p for p in config["phases"]}
    pinned = [(test, phase) for test, phase in _pinned_phases() if "steps" in phase]
    assert {test for test, _ in pinned} >= {
        "eligibility_activation_days_20_to_30_without_visits",
        "eligibility_stimulation_days_60_to_90_then_cross_sell",
        "eligibility_cross_sell_outside_the_retention_window",
        "eligibility_retention_14_to_45_days_before_the_end",
        "eligibility_return_steps_30_60_90_days_after_the_end",
        "eligibility_customer_in_several_phases_gets_a_row_each",
    }
    for test, phase in pinned:
        if phase["steps"] and phase["steps"][0]["condition"] == "true":
            continue  # a stand-in phase (metrics tests), not a window
        expected = compiled[phase["name"]]
        assert (phase["priority"], phase["steps"]) == (expected["priority"], expected["steps"]), (
            f"unit test {test} pins {phase['name']} differently from the compiler: "
            f"pin {json.dumps(expected['steps'])}"
        )


def test_every_enabled_step_in_priority_order_with_its_condition():
    config = phase_config(parse_rules(PINNED_RULES, "pinned.yml"))
    assert [
        (p["name"], p["priority"], [s["step"] for s in p["steps"]]) for p in config["phases"]
    ] == [
        ("activation", 1, [1]),
        ("retention", 2, [1]),
        ("stimulation", 3, [1]),
        ("cross_sell", 4, [1]),
        ("return", 5, [1, 2, 3]),
    ]
    activation = config["phases"][0]["steps"][0]["condition"]
    assert activation == (
        '("days_since_purchase" between 20 and 30'
        " and not coalesce(\"membership_status\" = any('{cancelled}'), false)"
        ' and "visits_since_purchase" = 0)'
    )
    return_2 = config["phases"][4]["steps"][1]["condition"]
    assert '"days_since_end" between 60 and 89' in return_2
    assert "%s" not in json.dumps(config)
    # the shipped rules file compiles too (whatever its windows are today)
    assert phase_config(load_rules(RULES))["phases"]


def test_values_become_escaped_literals_and_disabled_phases_are_left_out():
    rules = parse_rules(ODD_RULES, "odd.yml")
    config = phase_config(rules)
    assert [p["name"] for p in config["phases"]] == ["retention", "cross_sell"]
    condition = config["phases"][0]["steps"][0]["condition"]
    assert condition == render_condition(rules.phases[0].steps[0].condition)
    assert '"product" = any(E\'{"gym\'\'s 12m","a,b","NULL","{{ x }}",' in condition
    # a '%s' inside a value is data, not a placeholder
    assert '"back\\\\\\\\slash",50%s}\')' in condition
    assert "\"membership_status\" <> 'it''s'" in condition
    assert '"has_renewal" = false' in condition
    assert '"lifetime_revenue" >= 1200.5' in condition
    assert '"ends_on" is not null' in condition
    assert 'not coalesce("days_until_end" between 14 and 45, false)' in condition


def test_var_json_has_no_jinja_delimiters_and_survives_cosmos_yaml():
    rules = parse_rules(ODD_RULES, "odd.yml")
    value = phase_vars(rules)[VAR_NAME]
    # dbt renders dbt_project.yml vars as Jinja: no '{{', '{%' or '{#' may reach it
    assert not any(d in value for d in ("{{", "{%", "{#", "}}"))
    assert json.loads(value) == phase_config(rules)
    # Cosmos passes operator vars to dbt as yaml.dump(vars)
    assert yaml.safe_load(yaml.dump({VAR_NAME: value}))[VAR_NAME] == value


def test_dbt_project_holds_no_phases_and_runs_get_the_rules_file_in_use(tmp_path):
    assert VAR_NAME not in yaml.safe_load(DBT_PROJECT.read_text())["vars"]
    rules_file = tmp_path / "phases.yml"
    rules_file.write_text(RULES.read_text().replace("between: [20, 30]", "between: [18, 30]"))
    settings = Settings(rules_file=rules_file)
    edited = phase_vars(load_rules(rules_file))
    assert with_phases(["build"], settings) == edited
    assert with_phases(["test", "--select", "x"], settings, {"a": "1"}) == {**edited, "a": "1"}
    # given by the caller (the DAG's validated file, a test's pin): left as it is
    assert with_phases(["build"], settings, {VAR_NAME: "{}"}) == {VAR_NAME: "{}"}
    assert with_phases(["build", "--vars", '{"lifecycle_phases": "{}"}'], settings) is None
    # a parse compiles no model: it never depends on the rules file
    rules_file.write_text("version: 1\nphases: []\nbroken: [\n")
    assert with_phases(["parse", "--no-partial-parse"], settings) is None


def test_the_ad_hoc_vars_command_prints_the_rules_files_vars(tmp_path, capsys):
    rules_file = tmp_path / "phases.yml"
    rules_file.write_text(RULES.read_text().replace("between: [20, 30]", "between: [18, 30]"))
    assert main([str(rules_file), "--as-of-date", "2026-06-30"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == {**phase_vars(load_rules(rules_file)), "as_of_date": "2026-06-30"}
    rules_file.write_text("version: 1\nphases: [{name: nope}]\n")
    assert main([str(rules_file)]) == 1
    assert str(rules_file) in capsys.readouterr().err


def test_the_dag_and_the_cli_pass_the_settings_rules_file(tmp_path):
    rules_file = tmp_path / "phases.yml"
    rules_file.write_text(RULES.read_text().replace("between: [60, 90]", "between: [61, 90]"))
    settings = Settings(rules_file=rules_file)
    value = rules_for_dbt(settings)
    assert value == phase_vars(load_rules(rules_file))[VAR_NAME]
    stimulation = json.loads(value)["phases"][2]
    assert stimulation["name"] == "stimulation"
    assert '"days_since_purchase" between 61 and 90' in stimulation["steps"][0]["condition"]


def test_extra_vars_merge_into_the_dbt_command():
    args = _with_vars(["build", "--vars", "{default_consent: false}"], None, {VAR_NAME: "{}"})
    assert json.loads(args[2]) == {"default_consent": False, VAR_NAME: "{}"}
    args = _with_vars(["build"], None, {VAR_NAME: "{}"})
    assert args == ["build", "--vars", json.dumps({VAR_NAME: "{}"})]


def test_a_relation_dbt_builds_becomes_a_ref_marker():
    """bought_service reads customer_service_purchases: dbt must ref() it, not name a schema."""
    rules = parse_rules(ODD_RULES, "odd.yml", schema="somewhere")
    compiled = rules.phases[1].steps[0].condition
    assert '"somewhere"."customer_service_purchases"' in compiled.sql.as_string(None)
    condition = phase_config(rules)["phases"][1]["steps"][0]["condition"]
    assert condition == (
        '("days_since_purchase" > 90 and not coalesce(exists (select 1 from '
        "__lifecycle_ref__customer_service_purchases__ _sp "
        "where _sp.customer_id = customer_facts.customer_id and _sp.service = any('{massage}') "
        "and _sp.last_purchased_on > customer_facts.as_of_date - 90::integer), false))"
    )
    assert "somewhere" not in condition


def test_a_value_spelling_a_ref_marker_never_reads_as_one():
    """Only the compiler writes __lifecycle_ref__: the dbt model replaces every occurrence."""
    text = ODD_RULES.replace('"NULL"', '"__lifecycle_ref__customer_service_purchases__"').replace(
        "service: massage, within_days: 90}}",
        "service: massage, within_days: 90}}\n"
        "        - {field: product, ne: 'it''s __lifecycle_ref__nope__'}\n"
        "        - {field: timezone, not_in: ['back\\\\slash __lifecycle_ref__x__']}",
    )
    rules = parse_rules(text, "odd.yml")
    retention, cross_sell = (p["steps"][0]["condition"] for p in phase_config(rules)["phases"])
    assert "__lifecycle_ref__" not in retention
    assert cross_sell.count("__lifecycle_ref__") == 1
    assert cross_sell.count("__lifecycle_ref__customer_service_purchases__ _sp ") == 1
    nope = "\\x5f\\x5flifecycle\\x5fref\\x5f\\x5fnope\\x5f\\x5f"
    assert f"\"product\" <> E'it''s {nope}'" in cross_sell
    assert "any(E'{\"back" in cross_sell
    assert "slash \\x5f\\x5flifecycle\\x5fref\\x5f\\x5fx\\x5f\\x5f\"}')" in cross_sell
