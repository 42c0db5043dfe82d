"""Logs never carry a phone number or an email address in clear."""

from __future__ import annotations

import logging

from lifecycle.logs import get_logger, mask_text


def test_phones_and_emails_are_masked_and_other_numbers_are_not():
    text = ("to +380671234567 / 067 123 45 67 and olena.k@gmail.com failed: outbox 123456, "
            "2026-06-01, sid SM0123456789abcdef")
    masked = mask_text(text)
    assert "+380671234567" not in masked and "olena.k@gmail.com" not in masked
    assert "067 123 45 67" not in masked
    assert "+380*******67" in masked and "o***@gmail.com" in masked
    assert "outbox 123456, 2026-06-01, sid SM0123456789abcdef" in masked


def test_the_filter_masks_the_formatted_message_and_the_traceback(caplog):
    log = get_logger("lifecycle.test_logs")
    with caplog.at_level(logging.INFO, logger="lifecycle.test_logs"):
        log.info("sending to %s", "+380501112233")
        try:
            raise ValueError("bounced: member@example.com")
        except ValueError:
            log.exception("send failed")
    text = caplog.text
    assert "+380501112233" not in text and "member@example.com" not in text
    assert "+380*******33" in text and "m***@example.com" in text
