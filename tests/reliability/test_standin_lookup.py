"""The stand-in answers Twilio's Messages list as Twilio does (the real SDK pages through it),
and its control endpoint lists what it accepted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
from twilio.rest import Client

from lifecycle.delivery.lookup import TwilioLookup, _BaseUrlHttpClient
from lifecycle.delivery.standin import StandinServer
from lifecycle.delivery.transports.base import OutboundMessage
from lifecycle.delivery.transports.twilio import TwilioTransport

SID = "AC" + "0" * 32


def _send(url: str, messages: list[tuple[int, str, str]]) -> list[str]:
    t = TwilioTransport(SID, "token", messaging_service_sid="MG" + "1" * 32,
                        status_callback_url="http://127.0.0.1:9/twilio/status", base_url=url)
    try:
        results = t.send_batch([OutboundMessage(i, f"k{i}", f"C{i}", "retention", 1, "sms", to,
                                                None, body) for i, to, body in messages])
    finally:
        t.close()
    return [r.provider_id for r in results]


def test_the_sdk_lists_messages_by_recipient_and_date_page_by_page():
    with StandinServer() as server:
        sids = _send(server.url, [(i, "+380501110000" if i < 5 else "+380502220000", f"m{i}")
                                  for i in range(7)])
        client = Client(SID, "token", http_client=_BaseUrlHttpClient(server.url, 5.0))
        before = datetime.now(UTC) - timedelta(minutes=1)
        listed = client.messages.list(to="+380501110000", date_sent_after=before, page_size=2)
        assert sorted(m.sid for m in listed) == sorted(sids[:5])  # three pages
        assert {m.body for m in listed} == {f"m{i}" for i in range(5)}
        assert all(m.date_sent >= before.replace(microsecond=0) for m in listed)
        # a later window, or a day before today: nothing
        assert client.messages.list(to="+380501110000",
                                    date_sent_after=datetime.now(UTC) + timedelta(hours=1)) == []
        yesterday = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%d")
        assert client.messages.list(to="+380502220000", date_sent_before=yesterday) == []
        found = TwilioLookup(SID, "t", base_url=server.url).sent_to("+380502220000", before)
        assert sorted((m.sid, m.body) for m in found) == sorted(zip(sids[5:], ["m5", "m6"],
                                                                   strict=True))


def test_the_control_endpoint_lists_accepted_messages_as_json():
    with StandinServer() as server:
        sids = _send(server.url, [(41, "+380501110000", "hello")])
        r = httpx.get(f"{server.url}/_standin/accepted")
        assert r.status_code == 200
        body = r.json()
        assert body["requests"] == 1
        assert [(a["provider"], a["message_id"], a["to"], a["body"], a["outbox_id"])
                for a in body["accepted"]] == [("twilio", sids[0], "+380501110000", "hello", "41")]
