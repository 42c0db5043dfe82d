"""The real twilio and sendgrid SDKs against the stand-in provider server, fault by fault."""

from __future__ import annotations

import socket

import pytest

from lifecycle.delivery.standin import StandinServer
from lifecycle.delivery.transports.base import OutboundMessage, SendOutcome
from lifecycle.delivery.transports.sendgrid import SendGridTransport
from lifecycle.delivery.transports.twilio import TwilioTransport


@pytest.fixture
def standin():
    with StandinServer() as server:
        yield server


def _sms(i: int, to: str = "+380671234567") -> OutboundMessage:
    return OutboundMessage(i, f"k{i}", f"C{i}", "activation", 1, "sms", to, None, f"Hi {i}")


def _mail(i: int, body: str = "same body") -> OutboundMessage:
    return OutboundMessage(i, f"k{i}", f"C{i}", "retention", 1, "email", f"c{i}@example.com",
                           "Renew", body)


def _twilio(url: str, timeout: float = 5.0) -> TwilioTransport:
    return TwilioTransport("AC" + "0" * 32, "token", messaging_service_sid="MG" + "1" * 32,
                           status_callback_url="http://127.0.0.1:9/twilio/status",
                           base_url=url, timeout=timeout)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_twilio_sends_and_the_outbox_id_travels_with_the_message(standin):
    results = _twilio(standin.url).send_batch([_sms(1), _sms(2)])
    assert [r.outcome for r in results] == [SendOutcome.SENT] * 2
    assert all(r.provider_id.startswith("SM") for r in results)
    log = standin.provider.accepted
    # sent concurrently: the provider may see them in either order
    assert sorted((a.outbox_id, a.body) for a in log) == [("1", "Hi 1"), ("2", "Hi 2")]
    assert {a.message_id for a in log} == {r.provider_id for r in results}


@pytest.mark.parametrize(
    ("fault", "outcome", "accepted"),
    [
        ("error_429", SendOutcome.RETRY, 0),
        ("error_503", SendOutcome.RETRY, 0),
        ("error_500", SendOutcome.UNKNOWN, 0),  # a 500 may follow processing: never guess
        ("error_500_after_accept", SendOutcome.UNKNOWN, 1),
        ("cut_after_accept", SendOutcome.UNKNOWN, 1),
        ("drop_before_accept", SendOutcome.UNKNOWN, 0),  # the request left: ambiguous to us
        ("slow_after_accept", SendOutcome.UNKNOWN, 1),
    ],
)
def test_twilio_faults_are_classified_by_what_may_have_happened(standin, fault, outcome, accepted):
    standin.provider.configure(**{fault: 1.0, "slow_ms": 2000})
    (result,) = _twilio(standin.url, timeout=0.5).send_batch([_sms(1)])
    assert result.outcome is outcome, result
    assert len(standin.provider.accepted) == accepted


def test_twilio_invalid_number_fails_for_good(standin):
    (result,) = _twilio(standin.url).send_batch([_sms(1, to="12345")])
    assert result.outcome is SendOutcome.FAILED and "400" in result.error
    assert standin.provider.accepted == []


def test_refused_connection_is_safe_to_retry():
    url = f"http://127.0.0.1:{_free_port()}"
    (sms,) = _twilio(url).send_batch([_sms(1)])
    (mail,) = SendGridTransport("SG.key", "club@example.com", base_url=url).send_batch([_mail(1)])
    assert sms.outcome is SendOutcome.RETRY and mail.outcome is SendOutcome.RETRY


def test_sendgrid_shares_requests_and_each_recipient_reads_their_own_text(standin):
    messages = [_mail(1), _mail(2), _mail(3, body="another body"),
                _mail(4, body="long " * 2000)]  # over the substitution limit: sent alone
    transport = SendGridTransport("SG.key", "club@example.com", base_url=standin.url)
    results = transport.send_batch(messages)
    transport.close()
    assert [r.outcome for r in results] == [SendOutcome.SENT] * 4
    assert results[0].provider_id == results[1].provider_id == results[2].provider_id
    assert results[3].provider_id != results[0].provider_id
    assert standin.provider.requests == 2
    got = {a.outbox_id: (a.to, a.body) for a in standin.provider.accepted}
    assert got == {str(m.outbox_id): (m.to_address, m.body) for m in messages}


def test_sendgrid_splits_requests_at_1000_personalizations(standin):
    messages = [_mail(i, body=f"Hello {i}") for i in range(2500)]
    transport = SendGridTransport("SG.key", "club@example.com", base_url=standin.url)
    results = transport.send_batch(messages)
    transport.close()
    assert {r.outcome for r in results} == {SendOutcome.SENT}
    assert standin.provider.requests == 3
    assert len({r.provider_id for r in results}) == 3
    assert sorted(int(a.outbox_id) for a in standin.provider.accepted) == list(range(2500))


@pytest.mark.parametrize(
    ("fault", "outcome", "accepted"),
    [
        ("error_429", SendOutcome.RETRY, 0),
        ("error_503", SendOutcome.RETRY, 0),
        ("error_500_after_accept", SendOutcome.UNKNOWN, 1),
        ("cut_after_accept", SendOutcome.UNKNOWN, 1),
        ("slow_after_accept", SendOutcome.UNKNOWN, 1),
    ],
)
def test_sendgrid_faults(standin, fault, outcome, accepted):
    standin.provider.configure(**{fault: 1.0, "slow_ms": 2000})
    transport = SendGridTransport("SG.key", "club@example.com", base_url=standin.url, timeout=0.5)
    (result,) = transport.send_batch([_mail(1)])
    assert result.outcome is outcome, result
    assert len(standin.provider.accepted) == accepted
