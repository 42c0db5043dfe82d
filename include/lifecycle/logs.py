"""Loggers that cannot leak a phone number or an email address, and the masks they use.

Every logger of the package comes from ``get_logger``: a filter rewrites each record's message,
once formatted, with phones and emails masked (``mask_phone``: ``+380*******67``, ``mask_email``:
``o***@gmail.com``, the same masks the preview shows), whatever the code logged (an exception
text from a provider, a row). The SDKs' own loggers get the same filter (``mask_library_loggers``).
"""

from __future__ import annotations

import logging
import re

# A phone: an optional +, then 9-15 digits, maybe split by single spaces or dashes (E.164 and
# how people write numbers); an email: the usual local@domain.tld.
_PHONE = re.compile(r"(?<![\w+])\+?\d(?:[ -]?\d){8,14}(?!\w)")
_EMAIL = re.compile(r"[\w.+'-]+@[\w-]+(?:\.[\w-]+)+")
LIBRARY_LOGGERS = ("twilio", "twilio.http_client", "twilio.async_http_client",
                   "python_http_client", "sendgrid", "lifecycle.twilio_sdk")


def mask_phone(phone: str | None) -> str | None:
    """+380671234567 -> +380*******67: enough to tell numbers apart, not to dial one."""
    if not phone:
        return phone
    keep_head = 4 if phone.startswith("+") else 3
    if len(phone) <= keep_head + 2:
        return "*" * len(phone)
    return phone[:keep_head] + "*" * (len(phone) - keep_head - 2) + phone[-2:]


def mask_email(email: str | None) -> str | None:
    """olena.koval@gmail.com -> o***@gmail.com."""
    if not email:
        return email
    local, at, domain = email.partition("@")
    if not at:
        return "*" * len(email)
    return (local[:1] or "*") + "***@" + domain


def mask_contact(channel: str, address: str | None) -> str | None:
    return mask_email(address) if channel == "email" else mask_phone(address)


def mask_text(text: str) -> str:
    """``text`` with every phone number and email address masked."""
    text = _EMAIL.sub(lambda m: mask_email(m.group(0)) or "", text)
    return _PHONE.sub(lambda m: mask_phone(re.sub(r"[ -]", "", m.group(0))) or "", text)


class MaskPersonalData(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_text(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = mask_text(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = mask_text(record.exc_text)
        return True


_FILTER = MaskPersonalData()


def get_logger(name: str) -> logging.Logger:
    """The named logger, with personal data masked in everything it logs."""
    logger = logging.getLogger(name)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
    return logger


def mask_library_loggers() -> None:
    """Put the filter on the provider SDKs' loggers too."""
    for name in LIBRARY_LOGGERS:
        get_logger(name)
