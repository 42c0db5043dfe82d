"""Per-day summaries of the outbox: what the daily DAG logs and the demo prints."""

from __future__ import annotations

import json
import logging
from collections import Counter
from datetime import date
from typing import Any

import psycopg

log = logging.getLogger(__name__)


def day_counts(url: str, plan_date: date) -> dict[str, Any]:
    """Messages by phase x channel x status and skips by reason, for one planning date."""
    with psycopg.connect(url) as conn:
        msgs = conn.execute(
            "select phase, channel, status, count(*) from ops.outbox where plan_date = %s "
            "group by 1, 2, 3",
            (plan_date,),
        ).fetchall()
        skips = conn.execute(
            "select reason, count(*) from ops.skips where plan_date = %s group by 1", (plan_date,)
        ).fetchall()
    by_phase_channel: Counter = Counter()
    by_status: Counter = Counter()
    for phase, channel, status, n in msgs:
        by_phase_channel[f"{phase}:{channel}"] += n
        by_status[status] += n
    return {
        "plan_date": plan_date.isoformat(),
        "messages": dict(sorted(by_phase_channel.items())),
        "status": dict(sorted(by_status.items())),
        "skipped": dict(sorted((r, n) for r, n in skips)),
    }


def day_summary(url: str, plan_date: date, planned: dict, sent: list[dict]) -> dict[str, Any]:
    """Log and record the day's outcome (no personal data: counts only)."""
    counts = day_counts(url, plan_date)
    counts["dispatch"] = list(sent)  # a lazy XCom sequence in Airflow: materialise it
    log.info("lifecycle day %s: %s", plan_date, json.dumps(counts, sort_keys=True))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "insert into ops.runs (plan_date, step, finished_at, status, summary) "
            "values (%s, 'summary', now(), 'ok', %s)",
            (plan_date, json.dumps(counts)),
        )
    return counts
