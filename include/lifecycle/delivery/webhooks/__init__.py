"""Provider webhooks: signed SendGrid events, Twilio status callbacks and inbound SMS.

``create_app()`` is the FastAPI app Airflow's api-server mounts (plugins/lifecycle_webhooks.py)
and ``lifecycle webhooks serve`` runs alone. No Airflow import here (docs/architecture.md #7).
"""

from __future__ import annotations

from lifecycle.delivery.webhooks.app import PREFIX, create_app, serve, standalone_app

__all__ = ["PREFIX", "create_app", "serve", "standalone_app"]
