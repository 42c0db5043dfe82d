"""The webhook plugin: Airflow finds it and its api-server mounts the receiver at /lifecycle."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


def test_api_server_mounts_the_webhook_receiver():
    from airflow import plugins_manager
    from airflow.api_fastapi.app import init_plugins
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    apps, _ = plugins_manager.get_fastapi_plugins()
    ours = [a for a in apps if a["name"] == "lifecycle provider webhooks"]
    assert [a["url_prefix"] for a in ours] == ["/lifecycle"]
    server = FastAPI()
    init_plugins(server)  # what Airflow's api-server does with every plugin's fastapi_apps
    client = TestClient(server)
    assert client.get("/lifecycle/health").json() == {"ok": True}
    # no key is configured in this environment: refused, and the warehouse is never dialled
    assert client.post("/lifecycle/sendgrid/events", content=b"[]").status_code == 503
