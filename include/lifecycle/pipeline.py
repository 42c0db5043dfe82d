"""One logical day end to end. The CLI and the DAG tasks call these same functions."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal

import psycopg

from lifecycle.delivery import dispatch as dispatch_mod
from lifecycle.delivery.transports import get_transport
from lifecycle.planning.outbox import plan_day
from lifecycle.planning.plan import PlanReport
from lifecycle.rules.compiled import Rules
from lifecycle.rules.loading import load_rules
from lifecycle.settings import Settings, get_settings
from lifecycle.transform.dbt_vars import VAR_NAME as PHASES_VAR
from lifecycle.transform.dbt_vars import phase_vars
from lifecycle.warehouse.migrations import migrate

Clock = Literal["wall", "logical"]


def logical_now(plan_date: date) -> datetime:
    """The clock of a replayed day: its end in UTC, after every zone's window has opened."""
    return datetime.combine(plan_date + timedelta(days=1), time(0, 0), tzinfo=UTC)


def validate_rules(settings: Settings | None = None) -> Rules:
    """Load the rules file; raises RulesInvalid (every error, located) before anything runs."""
    settings = settings or get_settings()
    return load_rules(settings.rules_path, max_bytes=settings.rules_file_max_bytes)


def rules_for_dbt(settings: Settings | None = None) -> str:
    """Validate the rules file and return the ``lifecycle_phases`` dbt var (a JSON string).

    The daily DAG's first task: its XCom is how the dbt tasks get the phases
    (docs/architecture.md #1).
    """
    return phase_vars(validate_rules(settings))[PHASES_VAR]


def plan(url: str, plan_date: date, settings: Settings | None = None) -> PlanReport:
    settings = settings or get_settings()
    rules = validate_rules(settings)
    with _run(url, plan_date, "plan") as run:
        report = plan_day(url, rules, plan_date, settings)
        run.summary = report.as_dict()
    return report


def send_due(
    url: str,
    plan_date: date,
    *,
    clock: Clock = "wall",
    channel: str | None = None,
    settings: Settings | None = None,
) -> dispatch_mod.DispatchReport:
    """Dispatch due rows. ``clock='logical'`` replays ``plan_date`` (its rows are all due)."""
    settings = settings or get_settings()
    transport = get_transport(settings.transport, url, settings)
    try:
        with _run(url, plan_date, f"dispatch:{channel or 'all'}") as run:
            if clock == "logical":
                report = dispatch_mod.dispatch(
                    url,
                    transport,
                    now=logical_now(plan_date),
                    channel=channel,
                    plan_date=plan_date,
                    settings=settings,
                )
            else:
                report = dispatch_mod.dispatch(
                    url, transport, now=datetime.now(UTC), channel=channel, settings=settings
                )
            run.summary = report.as_dict()
    finally:
        transport.close()
    return report


@dataclass
class DayResult:
    plan: PlanReport
    dispatch: dispatch_mod.DispatchReport


def run_day(
    url: str,
    plan_date: date,
    *,
    clock: Clock = "wall",
    settings: Settings | None = None,
    build: bool = True,
) -> DayResult:
    """Validate rules, build dbt as of the date, plan, dispatch: what the daily DAG does."""
    from lifecycle.transform import dbt

    settings = settings or get_settings()
    rules = validate_rules(settings)
    migrate(url)
    if build:
        with _run(url, plan_date, "dbt_build"):
            # like the DAG: unit tests check model logic in CI, not each day's data
            dbt.build(url, plan_date, settings=settings, rules=rules, unit_tests=False)
    planned = plan(url, plan_date, settings)
    sent = send_due(url, plan_date, clock=clock, settings=settings)
    return DayResult(planned, sent)


class _RunRecord:
    def __init__(self) -> None:
        self.summary: dict[str, Any] = {}


class _run:
    """Record a pipeline step in ops.runs (status ok / failed with the error)."""

    def __init__(self, url: str, plan_date: date, step: str):
        self.url, self.plan_date, self.step = url, plan_date, step
        self.record = _RunRecord()

    def __enter__(self) -> _RunRecord:
        with psycopg.connect(self.url, autocommit=True) as conn:
            self.run_id = conn.execute(
                "insert into ops.runs (plan_date, step) values (%s, %s) returning run_id",
                (self.plan_date, self.step),
            ).fetchone()[0]
        return self.record

    def __exit__(self, exc_type, exc, tb) -> None:
        status = "ok" if exc is None else "failed"
        summary = dict(self.record.summary)
        if exc is not None:
            summary["error"] = f"{type(exc).__name__}: {exc}"[:2000]
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(
                "update ops.runs set finished_at = now(), status = %s, summary = %s "
                "where run_id = %s",
                (status, json.dumps(summary), self.run_id),
            )


def outbox_rows(url: str, plan_date: date) -> list[dict[str, Any]]:
    """Messages and skips of a planning date, as ``lifecycle outbox --json`` prints them."""
    with psycopg.connect(url) as conn:
        messages = conn.execute(
            """
            select outbox_id, customer_id, phase, step, channel, variant, status, send_at,
                   provider_id, sent_at, last_error
            from ops.outbox where plan_date = %s order by customer_id
            """,
            (plan_date,),
        ).fetchall()
        skips = conn.execute(
            "select customer_id, phase, step, reason from ops.skips where plan_date = %s "
            "order by customer_id, phase, step",
            (plan_date,),
        ).fetchall()
    out: list[dict[str, Any]] = []
    for oid, cid, phase, step, ch, variant, status, send_at, pid, sent_at, err in messages:
        out.append(
            {
                "outbox_id": oid,
                "customer_id": cid,
                "phase": phase,
                "step": step,
                "channel": ch,
                "variant": variant,
                "status": status,
                "send_at": send_at.isoformat(),
                "provider_id": pid,
                "sent_at": sent_at.isoformat() if sent_at else None,
                "error": err,
            }
        )
    for cid, phase, step, reason in skips:
        out.append(
            {
                "customer_id": cid,
                "phase": phase,
                "step": step,
                "channel": None,
                "status": "skipped",
                "reason": reason,
            }
        )
    return out
