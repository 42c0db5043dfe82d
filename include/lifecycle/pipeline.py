"""One logical day end to end. The CLI and the DAG tasks call these same functions."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal

import psycopg

from lifecycle.delivery import dispatch as dispatch_mod
from lifecycle.delivery.recheck import CONVERTED_BEFORE_SEND
from lifecycle.delivery.transports import get_transport
from lifecycle.logs import get_logger
from lifecycle.planning.outbox import plan_day
from lifecycle.planning.plan import PlanReport
from lifecycle.rules.compiled import Rules
from lifecycle.rules.loading import load_rules
from lifecycle.settings import Settings, get_settings
from lifecycle.transform.dbt_vars import VAR_NAME as PHASES_VAR
from lifecycle.transform.dbt_vars import phase_vars
from lifecycle.warehouse.migrations import migrate

Clock = Literal["wall", "logical"]
# A step of run_day announced to the caller (the CLI shows it with a spinner and its time).
Step = Callable[[str], AbstractContextManager]

log = get_logger(__name__)


def _no_step(_description: str) -> AbstractContextManager:
    return nullcontext()


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


def build_day(
    url: str, plan_date: date, *, settings: Settings | None = None, rules: Rules | None = None
) -> None:
    """Build dbt as of the date (``lifecycle build``, and the first step of ``run_day``):
    validate the rules, migrate, ``dbt build`` with the model tests, recorded in ops.runs."""
    from lifecycle.transform import dbt

    settings = settings or get_settings()
    rules = rules or validate_rules(settings)
    migrate(url)
    with _run(url, plan_date, "dbt_build"):
        # like the DAG: unit tests check model logic in CI, not each day's data
        dbt.build(url, plan_date, settings=settings, rules=rules, unit_tests=False)


def stale_reason(plan_date: date, today: date, settings: Settings | None = None) -> str | None:
    """Why a wall-clock run must not plan ``plan_date`` (None: plan it): see skip_stale_day."""
    settings = settings or get_settings()
    late = (today - plan_date).days
    if late <= settings.catchup_max_days:
        return None
    return (f"{plan_date} is {late} day(s) before today ({today}): its send window has passed, "
            f"so it is not planned (LIFECYCLE_CATCHUP_MAX_DAYS={settings.catchup_max_days}); "
            "its customers are caught by today's plan")


def skip_stale_day(url: str, plan_date: date, today: date,
                   settings: Settings | None = None) -> str | None:
    """Why a wall-clock run for ``plan_date`` must not plan (None: plan it); a skip is
    recorded in ``ops.runs`` (step plan, status skipped).

    A message is sent inside its planning day's send window, never after it: a day caught up
    late (the scheduler was down) would plan messages that can only expire. So a day older than
    ``catchup_max_days`` is built but not planned; the phase windows (days 20-30, 60-90, ...)
    catch its customers today, and nobody gets a message meant for another day. The daily DAG's
    plan task and ``lifecycle run`` (wall clock) both ask this.
    """
    why = stale_reason(plan_date, today, settings)
    if why is None:
        return None
    record_skip(url, plan_date, "plan", why)
    return why


def record_skip(url: str, plan_date: date, step: str, why: str) -> None:
    """A step of ``plan_date`` that did not run, with why, in ``ops.runs`` and the log."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("insert into ops.runs (plan_date, step, finished_at, status, summary) "
                     "values (%s, %s, now(), 'skipped', %s)",
                     (plan_date, step, json.dumps({"reason": why})))
    log.warning(why)


@dataclass
class DayResult:
    plan: PlanReport | None
    dispatch: dispatch_mod.DispatchReport | None
    # With the wall clock, why the day was built but not planned (its send window has passed).
    not_planned: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The shape ``lifecycle run --json`` prints (plan and dispatch null when not planned)."""
        out: dict[str, Any] = {
            "plan": self.plan.as_dict() if self.plan else None,
            "dispatch": self.dispatch.as_dict() if self.dispatch else None,
        }
        if self.not_planned:
            out["not_planned"] = self.not_planned
        return out


def run_day(
    url: str,
    plan_date: date,
    *,
    clock: Clock = "wall",
    settings: Settings | None = None,
    build: bool = True,
    today: date | None = None,
    step: Step = _no_step,
) -> DayResult:
    """Validate rules, build dbt as of the date, plan, dispatch: what the daily DAG does.

    With the wall clock, a day whose send window has passed (before ``today`` by more than
    LIFECYCLE_CATCHUP_MAX_DAYS) is built but not planned nor sent, as the DAG's catch-up does
    (``skip_stale_day``); ``clock='logical'`` replays any day. ``step`` wraps each step (the
    CLI's progress).
    """
    settings = settings or get_settings()
    rules = validate_rules(settings)
    migrate(url)
    if build:
        with step(f"dbt build as of {plan_date}"):
            build_day(url, plan_date, settings=settings, rules=rules)
    if clock == "wall":
        why = skip_stale_day(url, plan_date, today or datetime.now(UTC).date(), settings)
        if why:
            return DayResult(None, None, not_planned=why)
    with step(f"plan {plan_date}"):
        planned = plan(url, plan_date, settings)
    with step(f"dispatch ({clock} clock)"):
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
                   provider_id, sent_at, last_error, offer_code, offer_source
            from ops.outbox where plan_date = %s order by customer_id
            """,
            (plan_date,),
        ).fetchall()
        skips = conn.execute(
            "select customer_id, phase, step, reason, channel, variant from ops.skips "
            "where plan_date = %s order by customer_id, phase, step",
            (plan_date,),
        ).fetchall()
    out: list[dict[str, Any]] = []
    for (oid, cid, phase, step, ch, variant, status, send_at, pid, sent_at, err, offer_code,
         offer_source) in messages:
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
                "offer_code": offer_code,
                "offer_source": offer_source,
            }
        )
    for cid, phase, step, reason, channel, variant in skips:
        # a control_group skip carries the channel and variant it would have been sent with
        row = {
            "customer_id": cid,
            "phase": phase,
            "step": step,
            "channel": channel,
            "status": "skipped",
            "reason": reason,
        }
        if variant is not None:
            row["variant"] = variant
        out.append(row)
    return out


def customers_loaded(url: str) -> int:
    """Rows in raw.customers: 0 means nothing was loaded (no demo, load or generate yet)."""
    with psycopg.connect(url) as conn:
        return conn.execute("select count(*) from raw.customers").fetchone()[0]


def plan_runs(url: str, plan_date: date) -> list[tuple[str, str, dict[str, Any]]]:
    """(step, status, summary) of every recorded planning of the date, oldest first: empty when
    the date was never planned (a skipped wall-clock day has status 'skipped' and a reason)."""
    with psycopg.connect(url) as conn:
        return conn.execute(
            "select step, status, summary from ops.runs where plan_date = %s "
            "and (step = 'plan' or step like 'plan:%%') order by run_id",
            (plan_date,),
        ).fetchall()


def day_by_phase(url: str, plan_date: date) -> dict[str, dict[str, Any]]:
    """The date's outbox per phase: messages by status and channel, skips by reason."""
    out: dict[str, dict[str, Any]] = {}

    def phase(name: str) -> dict[str, Any]:
        return out.setdefault(name, {"status": {}, "channel": {}, "skipped": {}})

    with psycopg.connect(url) as conn:
        for name, channel, status, n in conn.execute(
            "select phase, channel, status, count(*) from ops.outbox where plan_date = %s "
            "group by 1, 2, 3 order by 1, 2, 3", (plan_date,)
        ):
            p = phase(name)
            p["status"][status] = p["status"].get(status, 0) + n
            p["channel"][channel] = p["channel"].get(channel, 0) + n
        for name, reason, n in conn.execute(
            "select phase, reason, count(*) from ops.skips where plan_date = %s "
            "group by 1, 2 order by 1, 2", (plan_date,)
        ):
            phase(name)["skipped"][reason] = n
        # planned, then skipped at send time (delivery.recheck: converted_before_send)
        for name, reason, n in conn.execute(
            "select phase, last_error, count(*) from ops.outbox where plan_date = %s "
            "and status = 'expired' and last_error = %s group by 1, 2 order by 1, 2",
            (plan_date, CONVERTED_BEFORE_SEND),
        ):
            skipped = phase(name)["skipped"]
            skipped[reason] = skipped.get(reason, 0) + n
    return out


def last_planned_day(url: str) -> date | None:
    """The latest date a plan was recorded for (None: no day was ever planned here)."""
    with psycopg.connect(url) as conn:
        return conn.execute(
            "select max(plan_date) from ops.runs where status = 'ok' "
            "and (step = 'plan' or step like 'plan:%%')"
        ).fetchone()[0]
