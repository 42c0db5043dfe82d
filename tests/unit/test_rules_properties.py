"""Property tests: whatever a marketer types, validation answers with located errors or valid
rules, never another exception; and no string typed into the file ever becomes SQL text."""

from __future__ import annotations

import copy
import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lifecycle.rules.compiled import Rules
from lifecycle.rules.errors import RulesInvalid
from lifecycle.rules.loading import parse_rules
from lifecycle.warehouse.facts import FACT_COLUMNS

RULES = Path(__file__).resolve().parents[2] / "include" / "rules" / "phases.yml"
TEXT = RULES.read_text()
DEFAULT = yaml.safe_load(TEXT)

INJECTIONS = [
    "x'); drop table raw.customers; --",
    '" or 1=1 --',
    "visits_last_30d) or (1=1",
    "1; delete from ops.outbox",
    "%s",
    "%(x)s",
    "{{ ''.__class__.__mro__ }}",
    "$$; select pg_sleep(10); $$",
    "customer_facts.customer_id",
]
KNOWN_KEYS = sorted(
    set(FACT_COLUMNS)
    | {
        "all", "any", "not", "field", "eq", "ne", "lt", "lte", "gt", "gte", "between", "in",
        "not_in", "is_null", "visits_in_last", "days", "name", "priority", "enabled", "audience",
        "channels", "steps", "when", "offer", "templates", "variants", "sms", "email", "subject",
        "body", "code", "title", "weight", "policy", "phases", "version", "max_sms_segments",
        "frequency_caps", "channel_caps", "send_window", "control_group", "volume_guard",
        "max", "start", "end", "percent", "salt", "repeat", "description", "bought_service",
        "service", "within_days",
    }
)  # fmt: skip

text_st = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30)
scalar_st = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    text_st,
    st.dates(min_value=dt.date(1900, 1, 1), max_value=dt.date(2100, 1, 1)),
    st.sampled_from(INJECTIONS + KNOWN_KEYS + ["{{ first_name }}", "{{ nope }}", "{% if %}"]),
)
value_st = st.recursive(
    scalar_st,
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(st.one_of(st.sampled_from(KNOWN_KEYS), text_st), children, max_size=3),
    ),
    max_leaves=6,
)


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, prefix + (i,))
    return out


def _get(doc: Any, path: tuple) -> Any:
    for p in path:
        doc = doc[p]
    return doc


def _check_outcome(text: str, yaml_parsed: bool) -> Rules | None:
    try:
        return parse_rules(text, "fuzz.yml")
    except RulesInvalid as exc:
        assert exc.errors
        for err in exc.errors:
            assert err.file == "fuzz.yml"
            assert err.path, err
            assert err.message, err
            if yaml_parsed:
                assert err.line is not None and err.column is not None, err
        return None


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_documents_validate_or_fail_with_located_errors(data):
    doc = copy.deepcopy(DEFAULT)
    for _ in range(data.draw(st.integers(min_value=1, max_value=4), label="mutations")):
        path = data.draw(st.sampled_from(_paths(doc)), label="path")
        op = data.draw(st.sampled_from(["delete", "set", "add", "rename", "wrap"]), label="op")
        if not path:
            if op == "set":
                doc = data.draw(value_st, label="root")
            continue
        parent, key = _get(doc, path[:-1]), path[-1]
        if op == "delete":
            del parent[key]
        elif op == "set":
            parent[key] = data.draw(value_st, label="value")
        elif op == "wrap":
            parent[key] = [parent[key]]
        elif op == "add" and isinstance(parent, dict):
            parent[data.draw(st.sampled_from(KNOWN_KEYS), label="key")] = data.draw(value_st)
        elif op == "rename" and isinstance(parent, dict):
            new = data.draw(st.one_of(st.sampled_from(KNOWN_KEYS), text_st), label="new key")
            parent[new] = parent.pop(key)
    text = yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)
    _check_outcome(text, yaml_parsed=True)


@settings(max_examples=150, deadline=None)
@given(
    st.integers(min_value=0, max_value=len(TEXT)),
    st.integers(min_value=0, max_value=20),
    st.text(alphabet=st.sampled_from(list(":-[]{}&*!|>'\"%@` \n\t#,?ab1")), max_size=8),
)
def test_text_edits_never_raise_anything_but_rules_invalid(at, cut, insert):
    text = TEXT[:at] + insert + TEXT[at + cut :]
    try:
        yaml.safe_load(text)
        parsed = True
    except (yaml.YAMLError, ValueError):
        parsed = False
    _check_outcome(text, yaml_parsed=parsed)


def _sql_texts(rules: Rules) -> list[tuple[str, list]]:
    return [
        (step.condition.sql.as_string(None), step.condition.params)
        for phase in rules.phases
        for step in phase.steps
    ]


def _flat(params: list) -> list:
    out = []
    for p in params:
        out += p if isinstance(p, list) else [p]
    return out


STRING_LEAVES = [p for p in _paths(DEFAULT) if isinstance(_get(DEFAULT, p), str)]
DEFAULT_SQL = [text for text, _ in _sql_texts(parse_rules(TEXT))]


@pytest.mark.parametrize("payload", INJECTIONS)
def test_an_injection_in_any_string_field_is_inert(payload):
    assert len(STRING_LEAVES) > 50
    accepted = 0
    for path in STRING_LEAVES:
        doc = copy.deepcopy(DEFAULT)
        _get(doc, path[:-1])[path[-1]] = payload
        rules = _check_outcome(yaml.safe_dump(doc, allow_unicode=True), yaml_parsed=True)
        if rules is None:
            continue
        accepted += 1
        # The SQL is exactly the default's: a value never changes the text, only the params.
        assert [text for text, _ in _sql_texts(rules)] == DEFAULT_SQL, path
        if path[-2:] == ("not_in", 0):
            assert any(payload in _flat(params) for _, params in _sql_texts(rules))
    assert accepted > 10


def _with_condition(cond: dict) -> Rules:
    doc = copy.deepcopy(DEFAULT)
    doc["phases"][0]["audience"]["all"].append(cond)
    rules = _check_outcome(yaml.safe_dump(doc, allow_unicode=True), yaml_parsed=True)
    assert rules is not None
    return rules


@settings(max_examples=100, deadline=None)
@given(
    st.one_of(st.sampled_from(INJECTIONS), text_st.filter(lambda s: "\x00" not in s)),
    st.sampled_from(["product", "membership_status", "club_id", "first_name", "timezone"]),
    st.sampled_from(["eq", "ne", "in", "not_in"]),
)
def test_a_condition_value_reaches_the_database_only_as_a_parameter(payload, column, op):
    def cond(v: str) -> dict:
        return {"field": column, op: [v] if op in ("in", "not_in") else v}

    (text, params), *_ = _sql_texts(_with_condition(cond(payload)))
    (harmless, _), *_ = _sql_texts(_with_condition(cond("x")))
    assert text == harmless
    # (YAML itself normalises a few characters, such as NEL, on the way in)
    assert yaml.safe_load(yaml.safe_dump(payload, allow_unicode=True)) in _flat(params)
