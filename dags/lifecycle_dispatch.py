"""lifecycle_dispatch: drain the outbox's due rows, channel by channel, sharded over workers.

Runs every 10 minutes and whenever lifecycle_daily updates the ``lifecycle_outbox`` Asset (a new
plan). Rows are due when their send_at (the customer's local send window) has come, whatever
their planning date. Each shard is one mapped task draining its channel until nothing is due;
shards of a channel run side by side on as many workers as there are (CeleryExecutor), kept
apart by the outbox claim (``FOR UPDATE SKIP LOCKED``), not by the task: a task the broker
delivers twice drains nothing twice. Pools per provider bound how many run at once.
"""

from __future__ import annotations

import os
from datetime import timedelta
from functools import partial

import pendulum
from airflow.sdk import Asset, Connection, dag, task
from airflow.timetables.assets import AssetOrTimeSchedule
from airflow.timetables.trigger import CronTriggerTimetable

from lifecycle.operations import on_failure
from lifecycle.settings import get_settings

SETTINGS = get_settings()  # environment only
OUTBOX = Asset("lifecycle_outbox")


CONN_ID = os.environ.get("LIFECYCLE_WAREHOUSE_CONN_ID", "lifecycle_warehouse")


def warehouse_url() -> str:
    return Connection.get(CONN_ID).get_uri()


@dag(
    dag_id="lifecycle_dispatch",
    description="Send the outbox's due messages at each provider's rate",
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("*/10 * * * *", timezone="UTC"), assets=[OUTBOX]
    ),
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,  # a drain sends what is due now: past slots have nothing of their own
    max_active_runs=1,
    dagrun_timeout=timedelta(hours=2),
    default_args={
        "owner": "lifecycle",
        # A retry is safe: rows already claimed are never claimed again; only due rows are.
        "retries": SETTINGS.task_retries,
        "retry_delay": timedelta(minutes=1),
        "execution_timeout": timedelta(hours=1),
        # Its rows come from many planning days: the callback counts all that wait.
        "on_failure_callback": partial(on_failure, url_getter=warehouse_url, per_date=False),
    },
    tags=["lifecycle", "dispatch"],
)
def lifecycle_dispatch():
    @task
    def shards(channel: str) -> list[int]:
        from lifecycle.operations import dispatch_shards

        return [s["shard"] for s in dispatch_shards(SETTINGS) if s["channel"] == channel]

    @task(multiple_outputs=False)  # one XCom, not one per key of the report
    def drain(channel: str, shard: int) -> dict:
        from airflow.sdk.exceptions import AirflowNotFoundException

        from lifecycle.operations import drain as drain_channel
        from lifecycle.operations import with_provider_connections

        # Credentials: the connections lifecycle_twilio / lifecycle_sendgrid, else environment.
        settings = with_provider_connections(SETTINGS, Connection.get, AirflowNotFoundException)
        return {"shard": shard, **drain_channel(warehouse_url(), channel, settings)}

    drain.override(task_id="drain_sms", pool=SETTINGS.twilio_pool).partial(
        channel="sms"
    ).expand(shard=shards.override(task_id="sms_shards")("sms"))
    drain.override(task_id="drain_email", pool=SETTINGS.sendgrid_pool).partial(
        channel="email"
    ).expand(shard=shards.override(task_id="email_shards")("email"))


lifecycle_dispatch()
