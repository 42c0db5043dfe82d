from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from lifecycle.rules.assignment import assign_variant, in_control_group
from lifecycle.rules.compiled import CompiledVariant
from lifecycle.rules.conditions import compile_condition
from lifecycle.rules.errors import RulesInvalid
from lifecycle.rules.loading import load_rules, parse_rules
from lifecycle.rules.models import Templates
from lifecycle.rules.schema import rules_json_schema
from lifecycle.rules.templates import SAMPLE_FIRST_NAME, render, sample_context

RULES = Path(__file__).resolve().parents[2] / "include" / "rules" / "phases.yml"
SCHEMA = RULES.with_name("phases.schema.json")
TEXT = RULES.read_text()


def _errors(text: str) -> list:
    with pytest.raises(RulesInvalid) as exc:
        parse_rules(text, "phases.yml")
    return exc.value.errors


def _line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def _replace(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


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
    # three written steps, the last one repeated every 30 days up to six steps in all
    assert [s.number for s in ret.steps] == [1, 2, 3, 4, 5, 6]
    assert ret.steps[1].condition.params[-2:] == [60, 89]
    assert [s.condition.params[-2:] for s in ret.steps[3:]] == [[120, 149], [150, 179], [180, 209]]
    assert [s.repeats for s in ret.steps] == [None, None, None, 3, 3, 3]
    assert {s.offer.code for s in ret.steps[2:]} == {"return_spa"}
    assert rules.policy.send_window.start.hour == 10
    guard = rules.policy.volume_guard
    assert (guard.max_messages, guard.max_ratio_to_median, guard.median_days) == (5000, 3.0, 7)
    retention = rules.phase("retention")
    assert [(v.name, v.weight, v.offer.code) for v in retention.steps[0].variants] == [
        ("A", 50, "renew_perk"),
        ("B", 50, "renew_discount"),
    ]
    # a step with plain templates is variant A
    assert [v.name for v in rules.phase("activation").steps[0].variants] == ["A"]


def test_unknown_column_is_located_with_a_suggestion():
    text = _replace(
        TEXT,
        "{field: days_since_purchase, between: [60, 90]}",
        "{field: days_since_purchse, between: [60, 90]}",
    )
    (err,) = _errors(text)
    assert err.line == _line_of(text, "days_since_purchse")
    assert err.column == text.splitlines()[err.line - 1].index("days_since_purchse") + 1
    assert err.path == "phases[1].audience.all[0].field"
    assert "unknown column 'days_since_purchse'" in err.message
    assert err.suggestion == "days_since_purchase"
    assert "did you mean 'days_since_purchase'" in err.message
    assert "visits_last_30d" in err.valid
    assert str(err).startswith(f"phases.yml:{err.line}:{err.column}: phases[1].audience")


def test_unknown_field_names_the_valid_ones():
    text = _replace(TEXT, "    priority: 2\n", "    priorty: 2\n")
    errors = _errors(text)
    typo = next(e for e in errors if e.path == "phases[3].priorty")
    assert typo.line == _line_of(text, "priorty: 2")
    assert typo.column == 5  # the key itself, not its value
    assert typo.suggestion == "priority"
    assert "did you mean 'priority'" in typo.message and "max_sms_segments" in typo.valid
    assert any(e.path == "phases[3].priority" and "missing" in e.message for e in errors)


def test_all_condition_and_template_errors_at_once():
    text = _replace(
        TEXT,
        "{field: days_since_purchase, between: [20, 30]}",
        "{field: days_since_purchase, between: [30, 20]}",
    )
    text = _replace(
        text, "{field: visits_since_purchase, eq: 0}", "{field: visits_since_purchase, eq: none}"
    )
    text = _replace(
        text, "Try {{ offer.title }} on your next visit", "Try {{ ofer.title }} on your next visit"
    )
    text = _replace(text, "{field: has_renewal, eq: false}", "{field: has_renewal, gte: false}")
    errors = _errors(text)
    messages = " | ".join(f"{e.path}: {e.message}" for e in errors)
    assert len(errors) == 4, messages
    assert "impossible window [30, 20]" in messages
    assert "'visits_since_purchase' is integer; found 'none'" in messages
    assert (
        "template variable 'ofer' does not exist" in messages and "did you mean 'offer'" in messages
    )
    assert "'has_renewal' is boolean: operator 'gte' does not apply" in messages
    assert all(e.line is not None and e.file == "phases.yml" for e in errors)
    # in file order
    assert [e.line for e in errors] == sorted(e.line for e in errors)


def test_structural_errors_do_not_hide_condition_and_template_errors():
    # The models fail (a string priority, an unknown channel, an unknown policy key) and yet the
    # conditions, templates and priorities are still checked.
    text = _replace(TEXT, "    priority: 3\n", "    priority: three\n")
    text = _replace(text, "channels: [email, sms]", "channels: [email, smss]")
    text = _replace(text, "  max_messages_per_day: 1\n", "  max_mesages_per_day: 1\n")
    text = _replace(
        text, "{visits_in_last: {days: 30, gte: 4}}", "{visits_in_last: {days: 14, gte: 4}}"
    )
    text = _replace(text, "Come back: {{ offer.title }}", "Come back: {{ offer.titel }}")
    text = _replace(text, "    priority: 5\n", "    priority: 1\n")
    errors = {e.path: e for e in _errors(text)}
    assert errors["phases[1].priority"].valid == "a whole number"
    assert errors["phases[1].priority"].found == "'three'"
    chan = errors["phases[2].channels[1]"]
    assert (chan.found, chan.suggestion, chan.valid) == ("'smss'", "sms", "sms, email, call")
    assert errors["policy.max_mesages_per_day"].suggestion == "max_messages_per_day"
    days = errors["phases[1].audience.all[1].visits_in_last.days"]
    assert (days.found, days.valid) == ("14", "7, 30, 90")
    titel = errors["phases[4].steps[0].templates.sms"]
    assert "offer has no field 'titel'" in titel.message and titel.suggestion == "title"
    prio = errors["phases[4].priority"]
    assert "also used by 'activation'" in prio.message
    assert len(errors) == 6, list(errors)


def test_every_error_has_a_path_line_and_column():
    text = _replace(TEXT, "percent: 10", "percent: 110")
    text = _replace(text, 'start: "10:00"', 'start: "25:00"')
    text = _replace(text, "max_messages: 5000", "max_messages: -1")
    for err in _errors(text):
        assert err.path and err.line and err.column, err


def test_duplicate_key_and_bad_yaml_are_located():
    errors = _errors("version: 1\nversion: 1\nphases: []\n")
    dup = next(e for e in errors if "appears twice" in e.message)
    assert (dup.line, dup.column, dup.path) == (2, 1, "version")
    assert any(e.path == "phases" and "too short" in e.message for e in errors)
    (bad,) = _errors("version: 1\nphases: [\n")
    assert bad.line is not None and "not valid YAML" in bad.message
    (not_a_mapping,) = _errors("- a\n- b\n")
    assert not_a_mapping.path == "<root>" and not_a_mapping.line == 1


def test_odd_yaml_is_an_error_not_a_crash():
    (rec,) = [e for e in _errors("version: 1\nphases: &a [*a]\n") if "recursive" in e.message]
    assert rec.line == 2
    bad_date = _errors("version: 1\nphases: [{name: activation, x: 2026-13-45}]\n")
    assert any("cannot read this value" in e.message for e in bad_date)
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [" + ", ".join([f"*{chr(97 + i)}"] * 10) + "]\n"
        for i in range(6)
    )
    assert "too large" in _errors(bomb)[0].message


def test_channel_without_template_is_an_error():
    sms_line = "take the next step: {{ offer.title }} this month."
    line = next(x for x in TEXT.splitlines(keepends=True) if sms_line in x)
    (err,) = _errors(TEXT.replace(line, "", 1))
    assert err.path == "phases[2].steps[0].variants[1].templates"  # cross_sell variant B
    assert "channel 'sms'" in err.message


def test_sms_over_the_segment_limit_is_a_validation_error():
    long_sms = (
        "Hi {{ first_name }}, " + "a very good reason to come back " * 3 + "{{ offer.title }}"
    )
    text = _replace(
        TEXT,
        "\"{{ first_name or 'Hi' }}, last call: {{ offer.title }}.\"",
        json.dumps(long_sms),
    )
    (err,) = _errors(text)
    assert err.path == "phases[4].steps[2].templates.sms"
    assert "too long: 3 SMS segments" in err.message and "UCS-2" in err.message
    assert err.found == "3 segments"
    # the same text fits when the phase allows 3 segments
    text3 = _replace(text, "    priority: 5\n", "    priority: 5\n    max_sms_segments: 3\n")
    parse_rules(text3)
    # the sample is the documented worst case: a 20-character Cyrillic name
    assert len(SAMPLE_FIRST_NAME) == 20
    ctx = sample_context({"code": "x", "title": "t"})
    assert render("{{ first_name }} {{ variant }} {{ offer.code }}", ctx) == (
        f"{SAMPLE_FIRST_NAME} A x"
    )


def test_template_may_only_read_mart_fields_offer_and_variant():
    errors = _errors(_replace(TEXT, "we miss you! Come back", "{{ phone }} Come back"))
    assert any("template variable 'phone' does not exist" in e.message for e in errors)
    errors = _errors(_replace(TEXT, "we miss you! Come back", "{{ ''.__class__ }} Come back"))
    assert any("not allowed in a template" in e.message for e in errors)
    errors = _errors(_replace(TEXT, "we miss you! Come back", "{{ first_name | shout }}"))
    assert any("template" in e.message and "shout" in e.message for e in errors)


def test_empty_fact_renders_as_nothing_not_none():
    assert render("Hi {{ first_name }}!", {"first_name": None}) == "Hi !"
    assert render("{{ first_name or 'Hi' }}", {"first_name": None}) == "Hi"


def test_visits_in_last_is_sugar_over_the_visit_columns():
    errors: list = []
    sugar = compile_condition({"visits_in_last": {"days": 30, "gte": 4}}, "c", errors)
    plain = compile_condition({"field": "visits_last_30d", "gte": 4}, "c", errors)
    assert errors == []
    assert sugar.sql.as_string(None) == plain.sql.as_string(None) == '"visits_last_30d" >= %s'
    assert sugar.params == [4]
    compile_condition({"visits_in_last": {"days": 14, "gte": 4}}, "c", errors)
    compile_condition({"visits_in_last": {"days": 7, "gte": "four"}}, "c", errors)
    compile_condition({"visits_in_last": {"gte": 4}}, "c", errors)
    assert [e.path for e in errors] == [
        "c.visits_in_last.days",
        "c.visits_in_last.gte",
        "c.visits_in_last",
    ]
    assert errors[0].valid == "7, 30, 90"


def test_contradicting_conditions_are_an_impossible_window():
    text = _replace(
        TEXT,
        "- {field: visits_since_purchase, eq: 0}",
        "- {field: visits_since_purchase, eq: 0}\n        - {field: days_since_purchase, gt: 30}",
    )
    (err,) = _errors(text)
    assert "impossible audience" in err.message and "days_since_purchase" in err.message
    assert err.path == "phases[0].audience.all[3].gt"
    # a step whose when cannot meet its phase's audience
    text = _replace(
        TEXT,
        "{field: has_active_membership, eq: false}",
        "{field: days_since_end, lte: 20}",
    )
    errors = _errors(text)
    assert {e.path for e in errors} == {f"phases[4].steps[{i}].when" for i in range(3)}
    # touching bounds are fine: exactly one value
    errors = []
    parse_rules(
        _replace(
            TEXT,
            "- {field: visits_since_purchase, eq: 0}",
            "- {field: visits_since_purchase, eq: 0}\n        - {field: days_since_purchase, "
            "gte: 30}",
        )
    )


def test_variants_are_checked():
    retention = TEXT.index("  - name: retention")  # cross_sell has variants too
    block = TEXT[TEXT.index("        variants:", retention) : TEXT.index("  - name: return")]
    text = _replace(
        TEXT, block, block.replace("name: B", "name: A").replace("weight: 50", "weight: 0")
    )
    errors = {e.path: e for e in _errors(text)}
    assert "variant 'A' is defined twice" in errors["phases[3].steps[0].variants[1].name"].message
    assert "weights add up to 0" in errors["phases[3].steps[0].variants"].message
    both = TEXT[:retention] + _replace(
        TEXT[retention:],
        "        variants:\n",
        "        templates: {sms: hi, email: {subject: s, body: b}}\n        variants:\n",
    )
    (err,) = _errors(both)
    assert err.path == "phases[3].steps[0]" and "not both" in err.message


def test_variant_assignment_is_stable_and_follows_the_weights():
    t = Templates(sms="x")
    from lifecycle.rules.models import Offer

    offer = Offer(code="o", title="t")
    variants = [CompiledVariant("A", 1, offer, t), CompiledVariant("B", 3, offer, t)]
    ids = [f"C{i:06d}" for i in range(20_000)]
    first = [assign_variant(c, "retention", 1, variants, "salt").name for c in ids]
    assert first == [assign_variant(c, "retention", 1, variants, "salt").name for c in ids]
    share_b = first.count("B") / len(ids)
    assert 0.735 < share_b < 0.765
    # another step or salt reshuffles, independently of the control group
    other = [assign_variant(c, "retention", 2, variants, "salt").name for c in ids]
    assert 0.55 < sum(a == b for a, b in zip(first, other, strict=True)) / len(ids) < 0.70
    in_cg = [c for c in ids if in_control_group(c, 10, "salt")]
    cg_b = sum(assign_variant(c, "retention", 1, variants, "salt").name == "B" for c in in_cg)
    assert 0.70 < cg_b / len(in_cg) < 0.80


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


def test_operators_follow_the_column_type():
    errors: list = []
    assert compile_condition({"field": "product", "gt": "a"}, "c", errors) is None
    assert compile_condition({"field": "ends_on", "gte": "2026-06-01"}, "c", errors).params == [
        __import__("datetime").date(2026, 6, 1)
    ]
    assert compile_condition({"field": "days_since_end", "eq": None}, "c", errors) is None
    assert compile_condition({"field": "days_since_end", "gte": 1.5}, "c", errors) is None
    assert compile_condition({"alll": []}, "c", errors) is None
    assert [e.path for e in errors] == ["c.gt", "c.eq", "c.gte", "c.alll"]
    assert "is_null: true" in errors[1].message
    assert errors[3].suggestion == "all"


def test_a_column_with_a_fixed_set_of_values_takes_only_those():
    errors: list = []
    ok = compile_condition({"field": "rfm_segment", "in": ["loyal_guest", "guest"]}, "c", errors)
    assert ok is not None and ok.params == [["loyal_guest", "guest"]]
    assert compile_condition({"field": "rfm_segment", "eq": "loyal_guests"}, "c", errors) is None
    assert compile_condition(
        {"field": "rfm_segment", "not_in": ["champions", "cant_loose_them"]}, "c", errors
    ) is None
    assert [e.path for e in errors] == ["c.eq", "c.not_in"]
    assert "'rfm_segment' is never 'loyal_guests'" in errors[0].message
    assert errors[0].suggestion == "loyal_guest" and "need_attention" in errors[0].valid
    assert errors[1].suggestion == "cant_lose_them"


def test_control_group_is_deterministic_and_about_the_configured_share():
    ids = [f"C{i:07d}" for i in range(20_000)]
    first = [in_control_group(c, 10, "salt") for c in ids]
    assert first == [in_control_group(c, 10, "salt") for c in ids]
    share = sum(first) / len(ids)
    assert 0.09 < share < 0.11
    other_salt = [in_control_group(c, 10, "other") for c in ids]
    assert first != other_salt


def test_committed_json_schema_is_the_generated_one():
    committed = json.loads(SCHEMA.read_text())
    assert committed == rules_json_schema(), (
        "include/rules/phases.schema.json is stale: "
        "`lifecycle rules schema > include/rules/phases.schema.json`"
    )
    assert TEXT.splitlines()[0] == "# yaml-language-server: $schema=phases.schema.json"


def test_json_schema_accepts_the_default_file_and_rejects_typos():
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator(rules_json_schema())
    doc = yaml.safe_load(TEXT)
    assert list(validator.iter_errors(doc)) == []
    doc["phases"][0]["audience"]["all"][0]["field"] = "days_since_purchse"
    doc["phases"][1]["priorty"] = 3
    assert len(list(validator.iter_errors(doc))) == 2


def test_bought_service_checks_the_catalog_and_binds_every_value():
    errors: list = []
    ok = compile_condition(
        {"bought_service": {"service": "massage", "within_days": 30}}, "c", errors
    )
    assert errors == []
    text = ok.sql.as_string(None)
    assert '"analytics"."customer_service_purchases"' in text
    assert "massage" not in text and "30" not in text
    assert ok.params == [["massage"], 30]
    compile_condition({"bought_service": {"service": "masage", "within_days": 30}}, "c", errors)
    compile_condition({"bought_service": {"service": "spa", "within_days": 0}}, "c", errors)
    compile_condition({"bought_service": {"service": "spa", "within": 3}}, "c", errors)
    assert [e.path for e in errors] == [
        "c.bought_service.service",
        "c.bought_service.within_days",
        "c.bought_service.within",
    ]
    assert errors[0].suggestion == "massage" and "personal_training" in errors[0].valid
    assert errors[2].suggestion == "within_days"


def test_the_marts_schema_is_a_parameter_not_text_from_the_file():
    text = TEXT.replace(
        "- {field: cross_sell_purchases_last_90d, eq: 0}",
        "- not: {bought_service: {service: [massage, spa], within_days: 90}}",
        1,
    )
    rules = parse_rules(text, schema="marts_v2")
    (cross,) = rules.phase("cross_sell").steps
    assert '"marts_v2"."customer_service_purchases"' in cross.condition.sql.as_string(None)


def test_cli_validate_json_and_schema(tmp_path):
    from click.testing import CliRunner

    from lifecycle.cli import main as cli

    bad = tmp_path / "phases.yml"
    bad.write_text(_replace(TEXT, "channels: [email, sms]", "channels: [email, smss]"))
    out = CliRunner().invoke(cli, ["rules", "validate", str(bad), "--json"])
    assert out.exit_code == 1
    (err,) = json.loads(out.output)
    assert err["path"] == "phases[2].channels[1]" and err["did_you_mean"] == "sms"
    assert err["line"] == _line_of(bad.read_text(), "smss") and err["file"] == str(bad)
    ok = CliRunner().invoke(cli, ["rules", "validate", str(RULES)])
    assert ok.exit_code == 0
    assert "ok (5 enabled phases, 10 steps, 3 of them repetitions)" in ok.output
    schema = CliRunner().invoke(cli, ["rules", "schema"])
    assert schema.exit_code == 0 and schema.output == SCHEMA.read_text()


def test_a_rules_file_over_the_size_limit_is_refused_before_it_is_read(tmp_path, monkeypatch):
    big = tmp_path / "phases.yml"
    big.write_text(TEXT + "#" * 2_000_000 + "\n")
    size = big.stat().st_size
    with pytest.raises(RulesInvalid) as exc:
        load_rules(big)  # the default limit, 1 000 000 bytes
    (error,) = exc.value.errors
    assert error.file == str(big)
    assert f"{size:,} bytes".replace(",", " ") in error.message
    assert "the limit is 1 000 000 bytes" in error.message
    assert str(big) in str(exc.value) and "LIFECYCLE_RULES_FILE_MAX_BYTES" in str(exc.value)
    # the setting moves the limit; the file at the limit itself still loads
    monkeypatch.setenv("LIFECYCLE_RULES_FILE_MAX_BYTES", str(size))
    assert len(load_rules(big).phases) == 5
    with pytest.raises(RulesInvalid, match="the limit is 1 000 bytes"):
        load_rules(big, max_bytes=1000)


def test_a_rules_file_that_never_ends_is_read_up_to_the_limit_only(tmp_path):
    """A device or pipe has no size to stat: reading stops one byte past the limit."""
    with pytest.raises(RulesInvalid, match="more than 1 000 bytes, the limit is 1 000 bytes"):
        load_rules("/dev/zero", max_bytes=1000)


REPEAT_LINE = "        repeat: {every_days: 30, max_steps: 6}\n"


def test_repeat_is_validated_with_located_errors():
    assert REPEAT_LINE in TEXT
    # on a step that is not the last
    moved = TEXT.replace(REPEAT_LINE, "", 1)
    moved = _replace(
        moved,
        "      - when: {field: days_since_end, between: [60, 89]}\n",
        "      - when: {field: days_since_end, between: [60, 89]}\n" + REPEAT_LINE,
    )
    (err,) = _errors(moved)
    assert err.path == "phases[4].steps[1].repeat"
    assert "only the last step" in err.message and err.line == _line_of(moved, "repeat:")
    # max_steps that leaves nothing to repeat, and windows that would overlap
    (err,) = _errors(_replace(TEXT, "max_steps: 6}", "max_steps: 3}"))
    assert err.path == "phases[4].steps[2].repeat.max_steps"
    assert "nothing to repeat" in err.message and "4 to 24" in err.valid
    (err,) = _errors(_replace(TEXT, "every_days: 30, max_steps", "every_days: 20, max_steps"))
    assert err.path == "phases[4].steps[2].repeat.every_days"
    assert "overlap" in err.message and "at least 30" in err.valid
    # a window that is not a day count's between
    text = _replace(
        TEXT,
        "      - when: {field: days_since_end, between: [90, 119]}\n",
        "      - when: {field: days_since_end, gte: 90}\n",
    )
    (err,) = _errors(text)
    assert err.path == "phases[4].steps[2].when" and "window to move" in err.message
    # the model's own bounds, and unknown keys
    errors = _errors(_replace(TEXT, "every_days: 30, max_steps: 6", "every_day: 30, max_steps: 99"))
    paths = {e.path for e in errors}
    assert "phases[4].steps[2].repeat.every_day" in paths
    assert "phases[4].steps[2].repeat.max_steps" in paths


def test_repetitions_are_steps_of_their_own_with_distinct_keys():
    from lifecycle.planning.plan import Candidate

    rules = load_rules(RULES)
    ret = rules.phase("return")
    facts = {"customer_id": "c1", "membership_id": "m1"}
    keys = [Candidate(ret, s, facts).message_key for s in ret.steps]
    assert len(set(keys)) == 6
    # deterministic: the same rules give the same keys
    again = load_rules(RULES).phase("return")
    assert keys == [Candidate(again, s, facts).message_key for s in again.steps]
    assert ret.steps[4].label() == "step 5 (step 3 again: days_since_end 150-179)"
    # a single-step phase can repeat too (the window is its `when`)
    text = _replace(
        TEXT,
        "      - offer: {code: addon_trial",
        "      - when: {field: days_since_purchase, between: [60, 69]}\n"
        "        repeat: {every_days: 10, max_steps: 3}\n"
        "        offer: {code: addon_trial",
    )
    stim = parse_rules(text, "phases.yml").phase("stimulation")
    assert [s.condition.params[-2:] for s in stim.steps] == [[60, 69], [70, 79], [80, 89]]


def test_offer_margin_defaults_to_all_of_the_revenue_and_is_checked_where_it_stands():
    rules = parse_rules(TEXT, "phases.yml")
    # fixed offers without a margin count at 100%; a next-best step at its catalog's lowest
    fixed = {s.offer.margin for p in rules.phases for s in p.steps if hasattr(s.offer, "code")}
    assert fixed == {1.0}
    cross = rules.phase("cross_sell").steps[0].variants[0].offer
    assert not hasattr(cross, "code") and cross.margin == 0.8
    text = _replace(TEXT, "offer: {code: addon_trial,", "offer: {code: addon_trial, margin: 0.35,")
    assert parse_rules(text, "phases.yml").phase("stimulation").steps[0].offer.margin == 0.35
    for bad, valid in (("0", "> 0"), ("1.5", "<= 1"), ('"35%"', "a number")):
        text = _replace(TEXT, "offer: {code: addon_trial,",
                        f"offer: {{code: addon_trial, margin: {bad},")
        (err,) = _errors(text)
        assert err.path == "phases[1].steps[0].offer.margin"
        assert err.line == _line_of(text, "margin:") and err.column
        assert valid in str(err), str(err)
