"""Offers chosen per member (from: next_best_offer) and policy.send_time in the rules file."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from lifecycle.planning.outbox import send_times
from lifecycle.rules.errors import RulesInvalid
from lifecycle.rules.loading import load_rules, offer_service_problems, parse_rules
from lifecycle.rules.models import DynamicOffer

RULES = Path(__file__).resolve().parents[2] / "include" / "rules" / "phases.yml"
TEXT = RULES.read_text()
CATALOG_LINE = '            massage: {title: "-20% on a massage", margin: 0.8}'
FALLBACK_LINE = (
    '          fallback: {code: pt_massage_spa, title: "-20% on personal training, massage or '
    'spa"}'
)


def _errors(text: str) -> list:
    with pytest.raises(RulesInvalid) as exc:
        parse_rules(text, "phases.yml")
    return exc.value.errors


def _line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def test_default_cross_sell_is_an_ab_test_of_next_best_against_the_fixed_offer():
    rules = load_rules(RULES)
    step = rules.phase("cross_sell").steps[0]
    a, b = step.variants
    assert isinstance(a.offer, DynamicOffer) and not isinstance(b.offer, DynamicOffer)
    assert b.offer.code == a.offer.fallback.code == "pt_massage_spa"
    assert rules.uses_next_best_offer()
    assert rules.policy.send_time.mode == "window_start"  # today's behaviour by default


def test_the_best_ranked_catalog_service_wins_then_margin_on_ties_then_fallback():
    offer = load_rules(RULES).phase("cross_sell").steps[0].variants[0].offer
    assert offer.choose([("personal_training", 1), ("spa", 2)])["code"] == "personal_training"
    # a service the catalog does not list is passed over
    chosen = offer.choose([("solarium", 1), ("spa", 2)])
    assert (chosen["code"], chosen["source"], chosen["margin"]) == ("spa", "next_best", 0.9)
    # equal ranks: the higher margin (spa 0.9 over massage 0.8)
    assert offer.choose([("massage", 1), ("spa", 1)])["code"] == "spa"
    fallback = offer.choose([])
    assert (fallback["code"], fallback["source"]) == ("pt_massage_spa", "fallback")
    assert offer.choose(None)["source"] == "fallback"


def test_catalog_mistakes_are_located():
    text = TEXT.replace(CATALOG_LINE, '            Massage: {title: "", margin: -1}')
    text = text.replace(FALLBACK_LINE, "")
    errors = _errors(text)
    messages = {e.path: e.message for e in errors}
    assert "not allowed" in messages["phases[2].steps[0].offer.catalog.Massage"]
    assert "too short" in messages["phases[2].steps[0].offer.catalog.Massage.title"]
    assert "out of range" in messages["phases[2].steps[0].offer.catalog.Massage.margin"]
    assert "fallback" in messages["phases[2].steps[0].offer.fallback"]
    line = _line_of(text, "Massage:")
    assert {e.line for e in errors if "Massage" in e.path} == {line}


def test_unknown_offer_source_and_template_fields_are_located():
    text = TEXT.replace("from: next_best_offer", "from: best_offer")
    errors = _errors(text)
    assert any(e.path.endswith("offer.from") and "next_best_offer" in str(e) for e in errors)
    # every offer a member may get is rendered at validation: a field only some entries have
    text = TEXT.replace(
        "regulars like you love it: {{ offer.title }} this month.\"\n",
        "regulars like you love it: {{ offer.title }} {{ offer.price }}.\"\n",
        1,
    )
    errors = _errors(text)
    assert any("offer has no field 'price'" in e.message for e in errors)
    assert len([e for e in errors if "'price'" in e.message]) == 1  # reported once


def test_a_catalog_service_the_club_does_not_sell_is_located():
    rules = load_rules(RULES)
    errors = offer_service_problems(rules, {"personal_training", "massage", "solarium"})
    assert [e.path for e in errors] == ["phases[2].steps[0].offer.catalog.spa"]
    assert errors[0].line == _line_of(TEXT, "            spa: {title:")
    assert "not in the club's services" in errors[0].message
    assert offer_service_problems(rules, {"personal_training", "massage", "spa"}) == []


KYIV = ZoneInfo("Europe/Kyiv")
D = date(2026, 6, 15)


@pytest.mark.parametrize(
    ("usual", "expected"),
    [
        (19 * 60, (17, 30)),  # 90 minutes before 19:00
        (None, (10, 0)),  # too few visits: the window's start
        (7 * 60, (10, 0)),  # before the window: its start
        (23 * 60, (19, 30)),  # after it: 30 minutes before it closes
        (30, (10, 0)),  # 00:30: the day's start, not yesterday
    ],
)
def test_habit_send_time_stays_inside_the_window(usual, expected):
    rules = parse_rules(
        TEXT.replace("send_time: {mode: window_start,", "send_time: {mode: habit,"), "p.yml"
    )
    send_at, window_end, deadline = send_times(D, KYIV, rules, 24, usual)
    assert (send_at.hour, send_at.minute) == expected and send_at.tzinfo == KYIV
    assert datetime.combine(D, rules.policy.send_window.start, KYIV) <= send_at < window_end
    assert (deadline - send_at).total_seconds() == 24 * 3600
    # window_start mode ignores the habit
    plain = load_rules(RULES)
    assert send_times(D, KYIV, plain, 24, usual)[0].hour == 10
