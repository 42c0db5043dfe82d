"""Provider credentials from Airflow connections reach the settings; missing ones leave them."""

from __future__ import annotations

import json
from dataclasses import dataclass

from lifecycle.operations import with_provider_connections
from lifecycle.settings import Settings


class Missing(Exception):
    pass


@dataclass
class Conn:
    login: str | None
    password: str | None
    extra: str = "{}"

    @property
    def extra_dejson(self) -> dict:
        return json.loads(self.extra)


def test_connections_fill_credentials_and_missing_ones_keep_the_environment():
    conns = {
        "lifecycle_twilio": Conn("AC123", "tw-token", json.dumps(
            {"messaging_service_sid": "MG9", "status_callback_url": "https://x/lifecycle/twilio/status"})),
    }

    def get(conn_id: str) -> Conn:
        if conn_id not in conns:
            raise Missing(conn_id)
        return conns[conn_id]

    env = Settings(sendgrid_api_key="SG.env", sendgrid_from="club@example.com")
    got = with_provider_connections(env, get, Missing)
    assert (got.twilio_account_sid, got.twilio_auth_token, got.twilio_messaging_service_sid,
            got.twilio_status_callback_url) == ("AC123", "tw-token", "MG9",
                                                "https://x/lifecycle/twilio/status")
    assert (got.sendgrid_api_key, got.sendgrid_from) == ("SG.env", "club@example.com")
    assert env.twilio_auth_token is None  # the original is not changed

    conns["lifecycle_sendgrid"] = Conn(None, "SG.conn", json.dumps({"from": "hi@club.ua"}))
    got = with_provider_connections(env, get, Missing)
    assert (got.sendgrid_api_key, got.sendgrid_from) == ("SG.conn", "hi@club.ua")
