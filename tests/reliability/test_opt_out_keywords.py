"""Which replies are an opt-out or an opt-in: any language, any case, punctuation ignored, the
whole message only (as Twilio's own STOP filtering); and the keyword lists as settings."""

from __future__ import annotations

import pytest

from lifecycle.delivery.webhooks.twilio import keyword_action
from lifecycle.settings import Settings

OPT_OUTS = [
    # Twilio's own list, any case, whitespace and punctuation around
    "STOP", "stop", "Stop.", " STOP! ", "StopAll", "STOP ALL", "unsubscribe", "Cancel",
    "END", "quit", "Revoke", "OPTOUT", "opt-out", "Opt out", "«STOP»", "STOP\u200b",
    "ＳＴＯＰ",  # fullwidth letters
    "S T O P", "s.t.o.p",  # whitespace and punctuation go inside the message too
    # Ukrainian
    "Стоп", "СТОП", "стоп", "стоп!!!", "Відписатися", "ВІДПИСАТИСЯ.", "відписатись", "Відписка",
    # Russian
    "отписаться", "Отписаться!", "ОТПИСКА", "Отпишите",
]
OPT_INS = ["START", "start.", " Unstop ", "YES", "yes!", "Старт", "ПІДПИСАТИСЯ", "подписаться"]
NEITHER = [
    "", None, "   ", "!!!", "stop it", "please stop", "STOP sending me this", "не стоп",
    "стоп-кран", "STOPP", "unstoppable", "Hello", "Стоп, а коли тренування?",
    "yes please", "start tomorrow",
]


@pytest.mark.parametrize("body", OPT_OUTS)
def test_opt_out_in_any_language_case_and_punctuation(body: str) -> None:
    assert keyword_action(body, Settings()) == "opt_out"


@pytest.mark.parametrize("body", OPT_INS)
def test_opt_in_in_any_language_case_and_punctuation(body: str) -> None:
    assert keyword_action(body, Settings()) == "opt_in"


@pytest.mark.parametrize("body", NEITHER)
def test_a_keyword_inside_a_sentence_is_not_one(body: str | None) -> None:
    assert keyword_action(body, Settings()) is None


def test_the_lists_come_from_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIFECYCLE_SMS_OPT_OUT_KEYWORDS", "STOP, Arrêt ,NIE")
    monkeypatch.setenv("LIFECYCLE_SMS_OPT_IN_KEYWORDS", '["START", "tak"]')
    settings = Settings()

    assert settings.sms_opt_out_keywords == ("STOP", "Arrêt", "NIE")
    assert [keyword_action(b, settings) for b in ("arrêt!", "Nie.", "стоп", "TAK", "yes")] == [
        "opt_out", "opt_out", None, "opt_in", None]


@pytest.mark.parametrize(("env", "message"), [
    ({"LIFECYCLE_SMS_OPT_IN_KEYWORDS": "START,Stop!"},
     "LIFECYCLE_SMS_OPT_OUT_KEYWORDS and LIFECYCLE_SMS_OPT_IN_KEYWORDS share stop"),
    ({"LIFECYCLE_SMS_OPT_OUT_KEYWORDS": "STOP,,END"},
     r"LIFECYCLE_SMS_OPT_OUT_KEYWORDS: item 2 \(''\) has no letters or digits"),
    ({"LIFECYCLE_SMS_OPT_OUT_KEYWORDS": '["STOP", 5]'},
     r"LIFECYCLE_SMS_OPT_OUT_KEYWORDS: item 2 \(5\) has no letters or digits"),
    ({"LIFECYCLE_SMS_OPT_IN_KEYWORDS": '["START"'},
     "LIFECYCLE_SMS_OPT_IN_KEYWORDS: not a JSON list"),
])
def test_a_bad_keyword_list_is_refused_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=message):
        Settings()
