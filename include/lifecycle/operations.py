"""What the DAGs call besides the day's pipeline: dispatcher shards, the wall-clock drain,
one-phase and dry runs, catch-up policy and the line a failing task logs.

No Airflow here (docs/architecture.md #7): the DAG files wire these functions; the CLI calls the
same ones.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, date, datetime
from typing import Any

import psycopg

from lifecycle.delivery import dispatch as dispatch_mod
from lifecycle.logs import get_logger
from lifecycle.pipeline import _run, record_skip, send_due, validate_rules
from lifecycle.planning.outbox import plan_day
from lifecycle.rules.compiled import Rules
from lifecycle.settings import Settings, get_settings
from lifecycle.warehouse.migrations import migrate

log = get_logger(__name__)


def dispatch_shards(settings: Settings | None = None) -> list[dict[str, Any]]:
    """The dispatcher tasks to map over: each channel times ``dispatch_shards``.

    Shards of one channel drain the same outbox side by side (the claim keeps them apart), so
    on several workers they multiply a channel's throughput up to its provider's rate.
    """
    settings = settings or get_settings()
    return [{"channel": ch, "shard": i}
            for ch in dispatch_mod.CHANNELS for i in range(settings.dispatch_shards)]


def drain(url: str, channel: str, settings: Settings | None = None) -> dict[str, Any]:
    """Send every row of ``channel`` due now (any planning date), at the provider's rate.

    The wall-clock dispatch the daily run does, recorded in ``ops.runs`` under today's date.
    """
    return send_due(url, datetime.now(UTC).date(), clock="wall", channel=channel,
                    settings=settings).as_dict()


def only_phases(rules: Rules, names: list[str]) -> Rules:
    """The rules with every phase but ``names`` left out (a rerun of one phase)."""
    known = {p.name for p in rules.phases}
    unknown = sorted(set(names) - known)
    if unknown:
        raise ValueError(f"no enabled phase {unknown} in {rules.file}; valid: {sorted(known)}")
    return dataclasses.replace(rules, phases=[p for p in rules.phases if p.name in names])


def plan_or_preview(url: str, plan_date: date, *, phases: list[str] | None = None,
                    dry_run: bool = False, settings: Settings | None = None) -> dict[str, Any]:
    """Plan the day (only ``phases`` if given), or with ``dry_run`` say what it would plan and
    write nothing. Returns counts only (an XCom)."""
    settings = settings or get_settings()
    rules = validate_rules(settings)
    if phases:
        rules = only_phases(rules, phases)
    if dry_run:
        from lifecycle.planning.preview import preview

        result = preview(url, rules, plan_date, settings, samples=0)
        return {"dry_run": True, "planned": result.planned, "skipped": result.skipped,
                "phases": {p.name: p.planned for p in result.phases},
                "volume": result.volume}
    with _run(url, plan_date, "plan" if not phases else "plan:" + ",".join(phases)) as run:
        report = plan_day(url, rules, plan_date, settings)
        run.summary = report.as_dict()
    return report.as_dict()


def skip_old_run(url: str, plan_date: date, today: date,
                 settings: Settings | None = None) -> str | None:
    """Why a wall-clock run for ``plan_date`` must not run at all (None: run it); a skip is
    recorded in ``ops.runs`` (step catchup, status skipped).

    The bound on catch-up: the DAG's start date stays fixed (scheduling is stable), but a run
    for a day more than ``daily_catchup_days`` before today builds nothing, plans nothing and
    sends nothing. So a first deploy (or a week-long outage) costs one short task per old day,
    not a dbt build each, and today's run is not held up behind months of history. Days within
    the bound are built as before and planned only within ``catchup_max_days``
    (``pipeline.skip_stale_day``). History for skipped days can be rebuilt with the logical clock.
    """
    settings = settings or get_settings()
    late = (today - plan_date).days
    if late <= settings.daily_catchup_days:
        return None
    why = (f"{plan_date} is {late} day(s) before today ({today}): older than the catch-up "
           f"bound (LIFECYCLE_DAILY_CATCHUP_DAYS={settings.daily_catchup_days}), so nothing is "
           "built, planned or sent for it; rebuild its history with the logical clock if needed")
    # The first run of a new deployment may come before any migration: the table must exist.
    migrate(url)
    record_skip(url, plan_date, "catchup", why)
    return why


def pending_counts(url: str, plan_date: date | None = None) -> dict[str, Any]:
    """Outbox rows not yet settled, by phase and channel (of one date, or all): what a
    failing task leaves behind."""
    # calls wait for the front desk's outcomes file, not for a task
    where = "status in ('planned', 'claimed', 'unknown') and channel <> 'call'"
    params: tuple = ()
    if plan_date is not None:
        where += " and plan_date = %s"
        params = (plan_date,)
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            f"select phase, channel, status, count(*) from ops.outbox where {where} "
            "group by 1, 2, 3 order by 1, 2, 3", params
        ).fetchall()
    by_phase: dict[str, int] = {}
    by_channel: dict[str, int] = {}
    by_status: dict[str, int] = {}
    for phase, channel, status, n in rows:
        by_phase[phase] = by_phase.get(phase, 0) + n
        by_channel[channel] = by_channel.get(channel, 0) + n
        by_status[status] = by_status.get(status, 0) + n
    return {"total": sum(by_phase.values()), "by_phase": by_phase, "by_channel": by_channel,
            "by_status": by_status}


def failure_message(url: str | None, *, dag_id: str, task_id: str, plan_date: date | None,
                    error: BaseException | str | None) -> str:
    """One line for a failed task: what failed and which messages it leaves unsent (counts by
    phase and channel, no personal data)."""
    head = f"lifecycle: {dag_id}.{task_id} failed"
    if plan_date is not None:
        head += f" for {plan_date}"
    if error is not None:
        head += f": {type(error).__name__ if isinstance(error, BaseException) else 'error'}: "
        head += str(error).splitlines()[0][:300] if str(error) else ""
    if url is None:
        return head
    try:
        pending = pending_counts(url, plan_date)
    except psycopg.Error as exc:
        return f"{head}; the outbox could not be read ({type(exc).__name__})"
    if not pending["total"]:
        return f"{head}; no message of that date is waiting"
    phases = ", ".join(f"{p} {n}" for p, n in pending["by_phase"].items())
    channels = ", ".join(f"{c} {n}" for c, n in pending["by_channel"].items())
    return (f"{head}; {pending['total']} messages not yet sent (by phase: {phases}; by channel: "
            f"{channels}; {json.dumps(pending['by_status'])})")


def reconcile_now(url: str, settings: Settings | None = None) -> dict[str, Any]:
    """Reconcile as of now; log what is still open; return counts (XComs carry no audiences)."""
    from lifecycle.delivery.reconcile import reconcile

    report = reconcile(url, now=datetime.now(UTC), settings=settings or get_settings())
    counts = {
        "sent": report.sent,
        "expired": report.expired,
        "found_by_asking": report.found_by_asking,
        "ask_failed": report.ask_failed,
        "unresolved": len(report.unresolved),
        "next_expiry": min((u.expires_at for u in report.unresolved), default=None),
        "expired_but_seen": len(report.expired_but_seen),
    }
    if counts["next_expiry"] is not None:
        counts["next_expiry"] = counts["next_expiry"].isoformat()
    log.info("lifecycle reconcile: %s", json.dumps(counts))
    if report.unresolved:
        sample = ", ".join(str(u.outbox_id) for u in report.unresolved[:20])
        log.warning("still unknown (outbox ids, first 20): %s", sample)
    if report.expired_but_seen:
        log.warning("expired, yet the provider reported them (look at them): %s",
                    ", ".join(map(str, report.expired_but_seen[:20])))
    return counts


def on_failure(context: dict[str, Any], url_getter, per_date: bool = True) -> str:
    """An Airflow on_failure_callback (bind ``url_getter`` with functools.partial): logs which
    task failed for which date and how many messages it leaves unsent (of the run's logical
    date, or of every date without ``per_date``). Reads the context as a plain mapping (no
    Airflow import here)."""
    ti = context["ti"]
    logical = context.get("logical_date") if per_date else None
    try:
        url = url_getter()
    except Exception:  # noqa: BLE001 - a failure callback must report whatever else is broken
        url = None
    line = failure_message(url, dag_id=ti.dag_id, task_id=ti.task_id,
                           plan_date=logical.date() if logical else None,
                           error=context.get("exception"))
    log.error(line)
    return line


# Airflow connection -> settings: how credentials reach a DAG task (never files).
TWILIO_CONN_ID = "lifecycle_twilio"
SENDGRID_CONN_ID = "lifecycle_sendgrid"


def with_provider_connections(settings: Settings, get_connection,
                              not_found: type[Exception]) -> Settings:
    """``settings`` with provider credentials from the Airflow connections, where defined.

    ``lifecycle_twilio``: login = Account SID, password = Auth Token, extra
    ``messaging_service_sid`` / ``from`` / ``status_callback_url``. ``lifecycle_sendgrid``:
    password = API key, extra ``from``. ``get_connection`` is Airflow's ``Connection.get`` and
    ``not_found`` its missing-connection error (the package imports no Airflow); a connection
    that does not exist leaves the environment's settings as they are.
    """
    update: dict[str, Any] = {}
    try:
        tw = get_connection(TWILIO_CONN_ID)
    except not_found:
        tw = None
    if tw is not None:
        extra = tw.extra_dejson or {}
        update.update({
            "twilio_account_sid": tw.login or settings.twilio_account_sid,
            "twilio_auth_token": tw.password or settings.twilio_auth_token,
            "twilio_messaging_service_sid": extra.get("messaging_service_sid")
            or settings.twilio_messaging_service_sid,
            "twilio_from": extra.get("from") or settings.twilio_from,
            "twilio_status_callback_url": extra.get("status_callback_url")
            or settings.twilio_status_callback_url,
        })
    try:
        sg = get_connection(SENDGRID_CONN_ID)
    except not_found:
        sg = None
    if sg is not None:
        extra = sg.extra_dejson or {}
        update.update({
            "sendgrid_api_key": sg.password or settings.sendgrid_api_key,
            "sendgrid_from": extra.get("from") or settings.sendgrid_from,
        })
    return settings.model_copy(update=update) if update else settings
