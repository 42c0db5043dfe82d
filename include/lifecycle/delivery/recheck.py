"""The last look before a row is handed over: has the customer converted since the plan?

A plan is made from the facts built in the morning. A renewal bought at noon, or a massage
booked after the load, is not in them: the afternoon's "renew now" would reach someone who just
did. Just before a batch's rows are handed to a provider (``leases.hand_over``), one query per
hand-over looks for the phase's conversion event (``rules.models.CONVERSION_EVENTS``) among the
raw rows loaded since the day's facts were built, and expires the rows it finds with the reason
``converted_before_send``: certainly not sent, counted and shown in the day's summary. The row
stays in the outbox: the customer was in the treatment arm when planned, and is counted there
(intention to treat).

"Since the facts were built": loaded (``_loaded_at``) after the start of the plan date's
recorded dbt build (``lifecycle run`` / ``lifecycle build`` record it in ops.runs), or, when
none is recorded before the row was planned (the DAG's per-model build), after the row was
planned. An event counts for the row's membership only: a visit, add-on or cross-sell
purchase on or after the day that membership was bought (the last 90 days without one), a
renewal or new membership other than it, not cancelled, starting after it. So a reload of old
rows (every upsert sets ``_loaded_at``) is no conversion.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from lifecycle.rules.models import CONVERSION_EVENTS

CONVERTED_BEFORE_SEND = "converted_before_send"

_PHASES = sorted(CONVERSION_EVENTS)

_SKIP_CONVERTED = """
with held as (
    select o.outbox_id, o.customer_id, o.plan_date, o.cycle_key, w.event,
           cycle.starts_on as cycle_starts_on,
           coalesce(cycle.purchased_on, o.plan_date - 89) as from_day,
           least(o.created_at, coalesce(build.started_at, o.created_at)) as loaded_after
    from ops.outbox o
    join unnest(%(phases)s::text[], %(events)s::text[]) as w (phase, event)
        on w.phase = o.phase
    left join raw.memberships cycle
        on cycle.membership_id = o.cycle_key and cycle.customer_id = o.customer_id
    left join lateral (
        select max(r.started_at) as started_at
        from ops.runs r
        where r.plan_date = o.plan_date and r.step = 'dbt_build' and r.status = 'ok'
          and r.started_at <= o.created_at
    ) as build on true
    where o.outbox_id = any(%(ids)s) and o.batch_id = %(batch_id)s and o.status = 'claimed'
),
converted as (
    select held.outbox_id
    from held
    where
        (held.event in ('renewal', 'new_membership') and exists (
            select 1 from raw.memberships m
            where m.customer_id = held.customer_id
              and m._loaded_at > held.loaded_after
              and m.status <> 'cancelled'
              and m.membership_id is distinct from held.cycle_key
              and m.purchased_on >= held.from_day
              and (held.cycle_starts_on is null or m.starts_on > held.cycle_starts_on)))
        or (held.event = 'first_visit' and exists (
            select 1 from raw.visits v
            where v.customer_id = held.customer_id
              and v._loaded_at > held.loaded_after
              and v.visited_at >= (held.from_day::timestamp at time zone %(tz)s)))
        or (held.event in ('addon_purchase', 'cross_sell_purchase') and exists (
            select 1 from raw.purchases p
            join {catalog} c on c.service = lower(trim(p.service))
            where p.customer_id = held.customer_id
              and p._loaded_at > held.loaded_after
              and c.category = case held.event when 'addon_purchase' then 'addon'
                                                else 'cross_sell' end
              and p.purchased_at >= (held.from_day::timestamp at time zone %(tz)s)))
)
update ops.outbox o
set status = 'expired', last_error = %(reason)s, lease_until = null, updated_at = now()
from converted
where o.outbox_id = converted.outbox_id
returning o.outbox_id
"""


@dataclass
class Recheck:
    """What the re-check needs besides the rows: where dbt builds (the service catalog it
    resolves, ``int_services_catalog``; ``raw.services`` before any build) and the club's
    time zone (the day a membership was bought starts in it)."""

    dbt_schema: str
    timezone: str
    converted: int = 0  # rows expired so far
    _catalog: sql.Composable | None = field(default=None, repr=False)

    def catalog(self, conn: psycopg.Connection) -> sql.Composable:
        if self._catalog is None:
            built = conn.execute(
                "select to_regclass(%s)", (f'"{self.dbt_schema}"."int_services_catalog"',)
            ).fetchone()[0]
            self._catalog = (
                sql.Identifier(self.dbt_schema, "int_services_catalog")
                if built is not None
                else sql.Identifier("raw", "services")
            )
        return self._catalog

    def skip_converted(
        self, conn: psycopg.Connection, batch_id: int, outbox_ids: list[int]
    ) -> set[int]:
        """Expire the rows of ``outbox_ids`` (still claimed by ``batch_id``) whose customer
        converted for the row's phase since the plan's facts; their ids (not committed)."""
        query = sql.SQL(_SKIP_CONVERTED).format(catalog=self.catalog(conn))
        rows = conn.execute(
            query,
            {
                "ids": outbox_ids,
                "batch_id": batch_id,
                "phases": _PHASES,
                "events": [CONVERSION_EVENTS[p] for p in _PHASES],
                "tz": self.timezone,
                "reason": CONVERTED_BEFORE_SEND,
            },
        ).fetchall()
        self.converted += len(rows)
        return {r[0] for r in rows}
