"""Mount the provider webhook receiver (lifecycle.delivery.webhooks) in Airflow's api-server
at /lifecycle.

Only registration lives here. The warehouse is LIFECYCLE_WAREHOUSE_URL if set, else the Airflow
connection the DAGs use, looked up on the first webhook request (never at import).
"""

from __future__ import annotations

import os

from airflow.plugins_manager import AirflowPlugin

from lifecycle.delivery.webhooks import PREFIX, create_app
from lifecycle.settings import get_settings

CONN_ID = os.environ.get("LIFECYCLE_WAREHOUSE_CONN_ID", "lifecycle_warehouse")


def _warehouse_url() -> str:
    url = get_settings().warehouse_url
    if url:
        return url
    from airflow.models.connection import Connection

    return Connection.get_connection_from_secrets(CONN_ID).get_uri()


class LifecycleWebhooksPlugin(AirflowPlugin):
    name = "lifecycle_webhooks"
    fastapi_apps = [
        {"app": create_app(url=_warehouse_url), "url_prefix": PREFIX,
         "name": "lifecycle provider webhooks"},
    ]
