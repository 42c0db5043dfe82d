"""Twilio status callbacks and inbound SMS: ``X-Twilio-Signature`` and what a request means.

Twilio signs the full URL it requested (with its query) followed by the sorted POST parameters,
HMAC-SHA1 with the account's auth token; the SDK's ``RequestValidator`` checks it (with and
without the port, as Twilio's own back ends differ). The outbox id travels in the status
callback URL (``?outbox_id=N``, transports/twilio.py), so it is covered by the signature.
"""

from __future__ import annotations

from datetime import datetime
from urllib.parse import parse_qsl

from starlette.datastructures import FormData
from twilio.request_validator import (
    SIGNATURE_HEADER,
    SIGNATURE_SETTINGS_HEADER,
    RequestValidator,
    get_signature_algorithm,
)

from lifecycle.delivery.webhooks.events import (
    OPT_IN,
    OPTED_OUT,
    Event,
    MalformedBody,
    clip,
    clip_address,
    parse_outbox_id,
)
from lifecycle.settings import Settings, fold_keyword, get_settings

__all__ = ["SIGNATURE_HEADER", "SIGNATURE_SETTINGS_HEADER", "parse_form", "signature_valid",
           "status_event", "inbound_event", "keyword_action"]

STATUSES = frozenset({"queued", "sent", "delivered", "undelivered", "failed"})
# Twilio refused the send because the recipient had opted out (replied STOP to our sender).
UNSUBSCRIBED_RECIPIENT = "21610"
# Error codes of an undelivered/failed SMS that prove the number itself cannot take our messages
# (ops.dead_contacts evidence), from Twilio's error reference:
#   30005 unknown destination handset: the number is unknown, inactive or no longer in service;
#   21211 invalid 'To' phone number, 21614 'To' is not a valid mobile number: no SMS reaches it;
#   30006 landline or unreachable carrier: the line cannot receive SMS (a carrier failure).
# Not death, however often they come: 30003 unreachable handset (powered off, no signal,
# roaming: Twilio calls it temporary), 30001 queue overflow, 30002 account suspended, 30004
# blocked by the recipient, 30007 carrier filtering, 30008 unknown error; they are about the
# moment, our account or our text, not the number.
DEAD_NUMBER_ERRORS = {
    "30005": "undelivered",
    "21211": "undelivered",
    "21614": "undelivered",
    "30006": "carrier_failure",
}


def parse_form(body: bytes) -> FormData:
    """The form-encoded POST parameters; MalformedBody if the body is not a form."""
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text))
    except (UnicodeDecodeError, ValueError) as exc:
        raise MalformedBody("the body is not a URL-encoded form") from exc
    return FormData(pairs)


def signature_valid(auth_token: str, url: str, params: FormData, signature: str,
                    settings_header: str | None = None) -> bool:
    """Whether ``signature`` is Twilio's for this URL and these parameters."""
    validator = RequestValidator(auth_token)
    return bool(validator.validate(url, params, signature,
                                   get_signature_algorithm(settings_header)))


def _sid(params: FormData) -> str:
    sid = clip(params.get("MessageSid") or params.get("SmsSid"), 64)
    if not sid:
        raise MalformedBody("MessageSid is missing")
    return sid


def status_event(params: FormData, outbox_id: str | None, received_at: datetime) -> Event | None:
    """The event of a status callback; None for a status we do not record (e.g. 'sending')."""
    sid = _sid(params)
    status = (clip(params.get("MessageStatus") or params.get("SmsStatus"), 40) or "").lower()
    if not status:
        raise MalformedBody("MessageStatus is missing")
    if status not in STATUSES:
        return None
    error = clip(params.get("ErrorCode"), 20)
    oid = parse_outbox_id(outbox_id)
    return Event(
        provider="twilio",
        channel="sms",
        event_type=status,
        occurred_at=received_at,
        # Twilio retries a callback with the same parameters: message + status is the event.
        dedupe_key=f"twilio|{sid}|{status}",
        outbox_id=oid,
        provider_message_id=sid,
        address=clip_address(params.get("To")),
        reason=f"error {error}" if error else None,
        suppression=OPTED_OUT if error == UNSUBSCRIBED_RECIPIENT else None,
        dead_evidence=(DEAD_NUMBER_ERRORS.get(error or "")
                       if status in ("undelivered", "failed") else None),
    )


def keyword_action(body: str | None, settings: Settings | None = None) -> str | None:
    """opt_out / opt_in when the whole message is one of the settings' keywords, else None.

    Compared folded (``fold_keyword``: any case, in any script, whitespace and punctuation
    ignored: "Stop.", "СТОП!", " відписатися "). A keyword inside a sentence ("stop it",
    "please cancel") is not one, as with Twilio, whose STOP filtering reacts only to a
    single-word message.
    """
    settings = settings or get_settings()
    word = fold_keyword(body)
    if word in settings.opt_out_words:
        return "opt_out"
    if word in settings.opt_in_words:
        return "opt_in"
    return None


def inbound_event(params: FormData, received_at: datetime,
                  settings: Settings | None = None) -> Event:
    """The event of an inbound SMS; its text is not kept, only the keyword it amounts to."""
    sid = _sid(params)
    sender = clip_address(params.get("From"))
    if not sender:
        raise MalformedBody("From is missing")
    action = keyword_action(params.get("Body"), settings)
    kind = {"opt_out": "inbound_opt_out", "opt_in": "inbound_opt_in"}.get(action or "", "inbound")
    return Event(
        provider="twilio",
        channel="sms",
        event_type=kind,
        occurred_at=received_at,
        dedupe_key=f"twilio|{sid}|inbound",
        provider_message_id=sid,
        address=sender,
        suppression={"opt_out": OPTED_OUT, "opt_in": OPT_IN}.get(action or ""),
    )
