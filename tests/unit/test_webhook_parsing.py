"""Webhook parsing and verification on their own: keywords, batches, signatures, timestamps."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from lifecycle.delivery.webhooks import sendgrid, twilio
from lifecycle.delivery.webhooks.events import MalformedBody, clip, parse_outbox_id


@pytest.mark.parametrize(("text", "action"), [
    ("STOP", "opt_out"), ("  stop\t", "opt_out"), ("StopAll", "opt_out"),
    ("UNSUBSCRIBE", "opt_out"), ("cancel", "opt_out"), ("End", "opt_out"), ("QUIT\n", "opt_out"),
    ("START", "opt_in"), (" unstop ", "opt_in"),
    ("stop it", None), ("STOPP", None), ("", None), (None, None), ("YES", "opt_in"),
])
def test_keyword_action_matches_whole_message_keywords(text, action):
    assert twilio.keyword_action(text) == action


def _key_pair():
    private = ec.generate_private_key(ec.SECP256R1())
    der = private.public_key().public_bytes(serialization.Encoding.DER,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, base64.b64encode(der).decode()


def test_sendgrid_signature_over_timestamp_and_raw_body():
    private, public = _key_pair()
    key = sendgrid.load_public_key(public)
    body, ts = b'[{"event":"open","timestamp":1}]', "1700000000"
    sig = base64.b64encode(private.sign(ts.encode() + body, ec.ECDSA(hashes.SHA256()))).decode()
    assert sendgrid.signature_valid(key, sig, ts, body)
    assert not sendgrid.signature_valid(key, sig, "1700000001", body)
    assert not sendgrid.signature_valid(key, sig, ts, body + b" ")
    assert not sendgrid.signature_valid(key, "not base64!", ts, body)
    assert not sendgrid.signature_valid(key, base64.b64encode(b"junk").decode(), ts, body)
    # the PEM form of the same key works too
    pem = key.public_bytes(serialization.Encoding.PEM,
                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    assert sendgrid.signature_valid(sendgrid.load_public_key(pem), sig, ts, body)


def test_sendgrid_key_must_be_p256():
    other = ec.generate_private_key(ec.SECP384R1()).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(ValueError, match="P-256"):
        sendgrid.load_public_key(base64.b64encode(other).decode())
    with pytest.raises(ValueError, match="not a public key"):
        sendgrid.load_public_key("bm90IGEga2V5")


def test_timestamp_tolerance():
    assert sendgrid.timestamp_fresh("1000", 300, now=1299)
    assert sendgrid.timestamp_fresh("1600", 300, now=1300)
    assert not sendgrid.timestamp_fresh("1000", 300, now=1301)
    assert not sendgrid.timestamp_fresh("-5", 300, now=0)
    assert not sendgrid.timestamp_fresh("12a", 300, now=0)
    assert not sendgrid.timestamp_fresh("١٢٣", 300, now=123)  # non-ASCII digits


def test_sendgrid_batch_maps_events_and_content_keys():
    body = json.dumps([
        {"event": "bounce", "timestamp": 1700000000, "outbox_id": "12", "email": "A@X.com",
         "type": "bounce", "reason": "550", "sg_event_id": "e1", "sg_message_id": "m1"},
        {"event": "bounce", "timestamp": 1700000000, "outbox_id": 13, "type": "blocked"},
        {"event": "dropped", "timestamp": "1700000000", "email": "b@x.com",
         "reason": "Unsubscribed Address"},
        {"event": "brand_new_kind", "timestamp": 1},
    ]).encode()
    events, ignored = sendgrid.parse_batch(body)
    assert ignored == 1
    assert [(e.outbox_id, e.suppression, e.address) for e in events] == [
        (12, "hard_bounce", "a@x.com"), (13, None, None), (None, "opted_out", "b@x.com")]
    assert events[0].dedupe_key == "sendgrid|outbox:12|bounce|1700000000"
    assert events[2].dedupe_key == "sendgrid|addr:b@x.com|dropped|1700000000"


@pytest.mark.parametrize("body", [
    b"", b"{}", b"[]", b"null", b"[1]", b'[{"timestamp": 1}]', b'[{"event": "open"}]',
    b'[{"event": "open", "timestamp": true}]', b'[{"event": "open", "timestamp": 1e400}]',
    b'[{"event": "open", "timestamp": -1}]', b"\xff\xfe", b"[" * 100000,
])
def test_malformed_batches_are_refused(body):
    with pytest.raises(MalformedBody):
        sendgrid.parse_batch(body)


def test_strings_that_postgres_cannot_store_are_cleaned():
    (event,), _ = sendgrid.parse_batch(
        b'[{"event": "open", "timestamp": 1, "email": "a\\u0000\\ud800@x.com"}]')
    assert event.address == "a?@x.com"
    assert clip("x" * 5000) == "x" * 1000
    assert clip({"a": 1}) is None


@pytest.mark.parametrize(("value", "expected"), [
    ("12", 12), (12, 12), (" 7 ", 7), ("0", None), (0, None), (-3, None), (True, None),
    ("1e3", None), (2**63, None), (None, None), ([1], None),
])
def test_parse_outbox_id(value, expected):
    assert parse_outbox_id(value) == expected


def test_twilio_form_and_events():
    params = twilio.parse_form(b"MessageSid=SM1&MessageStatus=Delivered&To=%2B380671234567")
    event = twilio.status_event(params, "5", received_at=None)  # type: ignore[arg-type]
    assert (event.event_type, event.outbox_id, event.address) == ("delivered", 5, "+380671234567")
    assert twilio.status_event(twilio.parse_form(b"MessageSid=SM1&MessageStatus=sending"),
                               None, received_at=None) is None  # type: ignore[arg-type]
    with pytest.raises(MalformedBody):
        twilio.status_event(twilio.parse_form(b"MessageStatus=sent"), None, received_at=None)
    with pytest.raises(MalformedBody):
        twilio.parse_form(b"\xff")
    with pytest.raises(MalformedBody):
        twilio.parse_form(b"novalue")
