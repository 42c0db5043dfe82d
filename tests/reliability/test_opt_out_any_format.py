"""STOP holds however the club stored the phone and however the member wrote STOP.

Customers are loaded into raw.customers with their phones as clubs store them (national with
trunk 0, 00-international, "+38 (067)", "+380 (0)67", text around the number, a spreadsheet's
dropped 0), dbt's real stg_club__customers normalises them, and customer_facts is built by
hand from the staged phones (as in test_plan_dispatch: the rules' side only). The STOPs arrive
as signed inbound SMS over HTTP from Twilio's E.164 ``From``, in English, Ukrainian and Russian,
any case, with punctuation; one comes from a number no customer has yet, whose owner is loaded
afterwards. Planning and dispatch then go through the real twilio SDK to the stand-in server,
whose log of accepted messages is what each number received.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg
import pytest
from test_plan_dispatch import RULES, SETTINGS, D, customer_ids, facts_row, load_facts
from webhook_client import SendGridKey, serving, table, twilio_signature
from webhook_client import webhook_settings as receiver_settings

from lifecycle.delivery.dispatch import dispatch
from lifecycle.delivery.standin import StandinServer
from lifecycle.delivery.transports import get_transport
from lifecycle.pipeline import logical_now
from lifecycle.planning.outbox import plan_day
from lifecycle.settings import Settings
from lifecycle.transform.dbt import run_dbt

pytestmark = pytest.mark.slow

# (phone as the club stored it, the E.164 Twilio reports as From, what the member texted)
OPTING_OUT = [
    ("0671230001", "+380671230001", "Стоп"),
    ("+38 (067) 123-00-02", "+380671230002", "СТОП"),
    ("00380 67 123 00 03", "+380671230003", "стоп"),
    ("+380 (0)67 123 00 04", "+380671230004", "відписатися"),
    ("tel. 067-123-00-05 (mob)", "+380671230005", "Отписаться!"),
    ("671230006", "+380671230006", "STOP."),
    ("067.123.00.07", "+380671230007", " stop! "),
    ("(067) 123 00 08", "+380671230008", "Unsubscribe"),
]
# They text something that is not a keyword, or nothing: they keep receiving.
STAYING = [
    ("067 123 00 20", "+380671230020", "stop it, I am on holiday until May"),
    ("0671230021", "+380671230021", None),
]
# A STOP from a number no customer has; its owner is loaded later, stored nationally.
UNKNOWN = ("067 123 99 99", "+380671239999", "Відписка.")


def _sms(base: str, sender: str, body: str, sid: str) -> None:
    url = f"{base}/twilio/inbound"
    params = {"MessageSid": sid, "From": sender, "To": "+15005550006", "Body": body}
    response = httpx.post(url, data=params,
                          headers={"X-Twilio-Signature": twilio_signature(url, params)})
    assert response.status_code == 200, response.text


def _load_raw(url: str, customers: list[tuple[str, str]]) -> None:
    with psycopg.connect(url) as conn:
        conn.cursor().executemany(
            "insert into raw.customers (customer_id, phone, created_at) values (%s, %s, %s)",
            [(cid, phone, datetime(2024, 1, 1, tzinfo=UTC)) for cid, phone in customers],
        )


def _stage_and_build_facts(url: str, target: Path) -> dict[str, str]:
    """dbt stages the raw phones; customer_facts holds every staged customer, retention by SMS
    only (no email to fall back to). Returns customer_id -> staged phone."""
    run_dbt(url, ["run", "--select", "stg_club__customers"], target_path=target)
    staged = dict(table(url, "select customer_id, phone from analytics.stg_club__customers "
                             "where phone_valid"))
    load_facts(url, [
        facts_row(cid, days_until_end=20, phone=phone, email=None, email_valid=False,
                  email_consent=False, email_contactable=False)
        for cid, phone in sorted(staged.items())
    ])
    return staged


def _dispatch(url: str, server: StandinServer) -> None:
    settings = Settings(transport="standin", standin_url=server.url)
    transport = get_transport("standin", url, settings)
    try:
        dispatch(url, transport, now=logical_now(D), plan_date=D, settings=settings,
                 throttles={})
    finally:
        transport.close()


def test_no_sms_after_an_opt_out_whatever_the_formats(fresh_db: str, tmp_path: Path) -> None:
    url = fresh_db
    people = OPTING_OUT + STAYING
    ids = customer_ids(len(people) + 1, control=False)
    late_id = ids.pop()
    by_number = {e164: cid for cid, (_, e164, _) in zip(ids, people, strict=True)}
    _load_raw(url, [(cid, stored) for cid, (stored, _, _) in zip(ids, people, strict=True)])
    staged = _stage_and_build_facts(url, tmp_path / "first")
    # dbt staged every stored format as the E.164 Twilio reports
    assert staged == {cid: e164 for e164, cid in by_number.items()}

    with serving(url, receiver_settings(SendGridKey())) as base:
        for i, (_, e164, body) in enumerate(people + [UNKNOWN]):
            if body is not None:
                _sms(base, e164, body, f"SM{i:032d}")

    # every keyword counted, for the customer it came from and for the number itself
    opted = {e164 for _, e164, _ in OPTING_OUT}
    assert table(url, "select customer_id, channel, reason, source from ops.suppressions "
                      "order by 1") == sorted(
        (by_number[n], "sms", "opted_out", "twilio") for n in opted)
    assert table(url, "select address from ops.address_suppressions where channel = 'sms' "
                      "and reason = 'opted_out' order by 1") == sorted(
        (n,) for n in opted | {UNKNOWN[1]})

    with StandinServer() as server:
        assert plan_day(url, RULES, D, SETTINGS).inserted_messages == len(STAYING)
        _dispatch(url, server)
        # the owner of the unknown number joins the club; planning runs again for the day
        _load_raw(url, [(late_id, UNKNOWN[0])])
        staged = _stage_and_build_facts(url, tmp_path / "second")
        assert staged[late_id] == UNKNOWN[1]
        assert plan_day(url, RULES, D, SETTINGS).inserted_messages == 0
        _dispatch(url, server)
        received = Counter(a.to for a in server.provider.accepted if a.provider == "twilio")

    assert {n: received[n] for n in opted | {UNKNOWN[1]}} == dict.fromkeys(
        opted | {UNKNOWN[1]}, 0)
    assert {n: received[n] for _, n, _ in STAYING} == {n: 1 for _, n, _ in STAYING}
    skips = dict(table(url, "select customer_id, reason from ops.skips"))
    assert {cid: skips.get(cid) for cid in [*(by_number[n] for n in opted), late_id]} == \
        dict.fromkeys([*(by_number[n] for n in opted), late_id], "opted_out")
