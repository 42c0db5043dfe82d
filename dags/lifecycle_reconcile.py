"""lifecycle_reconcile: settle ``unknown`` outbox rows from provider events, hourly.

A send whose outcome was ambiguous is never re-sent; the provider's delivery events (written by
the webhook receiver) say whether it went out. The task log and its XCom report what is still
unresolved and when it will expire.
"""

from __future__ import annotations

import os
from datetime import timedelta
from functools import partial

import pendulum
from airflow.sdk import Connection, dag, task

from lifecycle.operations import on_failure
from lifecycle.settings import get_settings

SETTINGS = get_settings()  # environment only


CONN_ID = os.environ.get("LIFECYCLE_WAREHOUSE_CONN_ID", "lifecycle_warehouse")


def warehouse_url() -> str:
    return Connection.get(CONN_ID).get_uri()


@dag(
    dag_id="lifecycle_reconcile",
    description="Resolve unknown sends from provider events",
    schedule="17 * * * *",
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,  # it reads the events as they are now
    max_active_runs=1,
    default_args={
        "owner": "lifecycle",
        "retries": SETTINGS.task_retries,
        "retry_delay": timedelta(minutes=5),
        "execution_timeout": timedelta(minutes=30),
        "on_failure_callback": partial(on_failure, url_getter=warehouse_url),
    },
    tags=["lifecycle", "reconcile"],
)
def lifecycle_reconcile():
    @task(multiple_outputs=False)  # one XCom, not one per key of the report
    def reconcile() -> dict:
        from lifecycle.operations import reconcile_now

        return reconcile_now(warehouse_url(), SETTINGS)

    reconcile()


lifecycle_reconcile()
