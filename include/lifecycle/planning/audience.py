"""Who is eligible on date D: each phase step's audience from ``customer_facts`` as of D, with
the outbox history and the suppression list the arbitration needs.
"""

from __future__ import annotations

from datetime import date, timedelta

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from lifecycle.contacts import CHANNEL_KIND, EMAIL, PHONE, dead_addresses, normalize
from lifecycle.logs import get_logger
from lifecycle.planning.plan import (
    CALL_NO_ANSWER,
    CONTROL_GROUP,
    DEAD_CONTACT,
    KEEP_ALIVE_CYCLE,
    LIVE_STATUSES,
    Candidate,
    History,
    PlanningError,
    contact_key,
    holds_key,
)
from lifecycle.rules.compiled import Rules
from lifecycle.rules.errors import RulesInvalid
from lifecycle.rules.loading import offer_service_problems
from lifecycle.settings import Settings
from lifecycle.warehouse.facts import FACTS_RELATION

log = get_logger(__name__)

# --------------------------------------------------------------------------- reading


def facts_table(settings: Settings) -> sql.Composable:
    return sql.Identifier(settings.dbt_schema, FACTS_RELATION)


def facts_built_for(conn: psycopg.Connection, settings: Settings) -> tuple[date | None, int]:
    """(as_of_date customer_facts is built for, rows); raise PlanningError if it is not built."""
    exists = conn.execute(
        "select to_regclass(%s)", (f'"{settings.dbt_schema}"."{FACTS_RELATION}"',)
    ).fetchone()[0]
    if exists is None:
        raise PlanningError(
            f"{settings.dbt_schema}.{FACTS_RELATION} does not exist: build dbt first "
            "(`lifecycle build --date D`)"
        )
    low, high, rows = conn.execute(
        sql.SQL("select min(as_of_date), max(as_of_date), count(*) from {}").format(
            facts_table(settings)
        )
    ).fetchone()
    if rows and low != high:
        raise PlanningError(
            f"{settings.dbt_schema}.{FACTS_RELATION} mixes as_of dates {low}..{high}: rebuild it"
        )
    return low, rows


def check_facts_date(conn: psycopg.Connection, plan_date: date, settings: Settings) -> date | None:
    """Refuse facts built for another day; return the day they are built for (None: empty)."""
    as_of, rows = facts_built_for(conn, settings)
    if rows and as_of != plan_date:
        raise PlanningError(
            f"{settings.dbt_schema}.{FACTS_RELATION} is built as of {as_of}, not {plan_date}: "
            f"build dbt for {plan_date} first (`lifecycle build --date {plan_date}`)"
        )
    return as_of


def select_candidates(
    conn: psycopg.Connection, rules: Rules, plan_date: date, settings: Settings
) -> list[Candidate]:
    """Every (customer, phase, step) the rules select from customer_facts as of ``plan_date``."""
    as_of = check_facts_date(conn, plan_date, settings)
    if as_of is None:
        return []
    table = facts_table(settings)
    out: list[Candidate] = []
    for phase in rules.phases:
        for step in phase.steps:
            query = sql.SQL("select * from {} where {} order by customer_id").format(
                table, step.condition.sql
            )
            cur = conn.cursor(row_factory=dict_row)
            for row in cur.execute(query, step.condition.params):
                out.append(Candidate(phase, step, row))
    return out


CONTACT_HEALTH_RELATION = "contact_health"
# Periods of keep_alive.every_days are counted from this day (any fixed day would do).
KEEP_ALIVE_EPOCH = date(2000, 1, 1)


def keep_alive_cycle(plan_date: date, every_days: int) -> str:
    """The cycle key of a keep-alive planned on ``plan_date``: its period of every_days."""
    return f"keep_alive:{every_days}:{(plan_date - KEEP_ALIVE_EPOCH).days // every_days}"


def _reachable_on(channel: str) -> sql.Composable:
    """SQL over customer_facts ``f``: the customer may get a message on ``channel`` (consent,
    valid contact, not suppressed, the address not dead): who a keep-alive can reach."""
    kind = CHANNEL_KIND[channel]
    address = sql.Identifier("f", "phone" if kind == PHONE else "email")
    parts = [
        sql.SQL("{}").format(sql.Identifier("f", f"{channel}_contactable")),
        sql.SQL("not exists (select 1 from ops.suppressions s where s.customer_id = "
                "f.customer_id and s.channel = {})").format(sql.Literal(channel)),
        sql.SQL("not exists (select 1 from ops.dead_contacts d where d.kind = {} "
                "and d.address = {})").format(sql.Literal(kind), address),
    ]
    if channel == "sms":
        parts.append(sql.SQL("not exists (select 1 from ops.address_suppressions a where "
                             "a.channel = 'sms' and a.address = f.phone)"))
    return sql.SQL("(") + sql.SQL(" and ").join(parts) + sql.SQL(")")


def select_keep_alive(
    conn: psycopg.Connection, rules: Rules, plan_date: date, settings: Settings
) -> list[Candidate]:
    """The keep-alive candidates of ``plan_date``: customers nobody has touched for
    policy.keep_alive.every_days days, the longest untouched first, at most max_per_day.

    Touched: the day the customer was created (customer_since), a message planned for them
    before D that is live or may have reached its provider, a control-group would-have
    (counted as its treatment twin's message), and a contact's last confirmation
    (contact_health: a delivery, a reply, a reached call, a contact given). Only customers a
    keep-alive channel can reach are chosen, so the unreachable do not fill the day's quota.
    """
    compiled = rules.keep_alive
    ka = rules.policy.keep_alive
    if compiled is None or ka is None:
        return []
    if check_facts_date(conn, plan_date, settings) is None:
        return []
    confirmations = sql.SQL("")
    if _exists(conn, settings, CONTACT_HEALTH_RELATION):
        confirmations = sql.SQL(
            " union all select customer_id, max(last_confirmed_on) from {} group by customer_id"
        ).format(sql.Identifier(settings.dbt_schema, CONTACT_HEALTH_RELATION))
    else:
        log.warning("%s.%s is not built: keep-alive counts messages only, not confirmations",
                    settings.dbt_schema, CONTACT_HEALTH_RELATION)
    query = sql.SQL("""
        with touches as (
            select customer_id, max(plan_date) as touched_on from ops.outbox
            where plan_date < %(d)s and (status = any(%(live)s) or handed_at is not null)
            group by customer_id
            union all
            select customer_id, max(plan_date) from ops.skips
            where plan_date < %(d)s and reason = %(control)s and channel is not null
            group by customer_id
            {confirmations}
        ),
        last_touch as (
            select customer_id, max(touched_on) as touched_on from touches group by customer_id
        )
        select f.*, greatest(f.customer_since, t.touched_on) as last_touched_on
        from {facts} f
        left join last_touch t on t.customer_id = f.customer_id
        where f.customer_since is not null
            and greatest(f.customer_since, t.touched_on) <= %(d)s - %(every)s
            and ({reachable})
        order by last_touched_on, f.customer_id
        limit %(limit)s
    """).format(
        confirmations=confirmations,
        facts=facts_table(settings),
        reachable=sql.SQL(" or ").join(_reachable_on(ch) for ch in ka.channels),
    )
    cycle = keep_alive_cycle(plan_date, ka.every_days)
    step = compiled.steps[0]
    cur = conn.cursor(row_factory=dict_row)
    rows = cur.execute(query, {
        "d": plan_date, "live": list(LIVE_STATUSES), "control": CONTROL_GROUP,
        "every": ka.every_days, "limit": ka.max_per_day,
    })
    return [Candidate(compiled, step, {**row, KEEP_ALIVE_CYCLE: cycle}) for row in rows]


def lookback_days(rules: Rules) -> int:
    """The longest rolling cap of the rules, in days."""
    policy = rules.policy
    caps = list(policy.frequency_caps) + policy.channel_caps.sms + policy.channel_caps.email
    caps += policy.channel_caps.call
    for p in rules.phases:
        caps += p.phase.frequency_caps
    return max((cap.days for cap in caps), default=1)


def load_history(
    conn: psycopg.Connection, customer_ids: list[str], plan_date: date, days: int
) -> History:
    """The keys these customers' rows hold, their messages in the lookback, D's rows, and the
    addresses D's outbox already holds (whoever's they are). A control customer's
    would-have-been message (its control_group skip) counts as one of its messages."""
    history = History()
    rows = conn.execute(
        """
        select customer_id, message_key, plan_date, status, channel, phase, handed_at,
               last_error
        from ops.outbox
        where customer_id = any(%s)
        """,
        (customer_ids,),
    )
    since = plan_date - timedelta(days=days)
    for customer_id, key, day, status, channel, phase, handed_at, error in rows:
        if channel == "call" and status == "failed" and error == CALL_NO_ANSWER:
            history.call_attempts[key] = history.call_attempts.get(key, 0) + 1
        if day == plan_date:
            history.today[customer_id] = key
            continue
        # A row that may have reached the provider counts as sent, for its key and the caps.
        if holds_key(status, handed_at):
            history.keys.add(key)
            if since <= day < plan_date:
                history.sent.setdefault(customer_id, []).append((day, channel, phase))
    # A control customer's would-have-been message counts as sent (for its key, the caps and
    # the day), as its treatment twin's would: otherwise the control arm would be "exposed"
    # again where treatment is capped or already sent. Rows from before the holdout recorded
    # the message (no channel) say nothing of it.
    rows = conn.execute(
        """
        select customer_id, message_key, plan_date, channel, phase
        from ops.skips
        where customer_id = any(%s) and reason = %s and channel is not null
        """,
        (customer_ids, CONTROL_GROUP),
    )
    for customer_id, key, day, channel, phase in rows:
        if day == plan_date:
            history.today[customer_id] = key
            history.held_today[customer_id] = channel
            continue
        history.keys.add(key)
        if since <= day < plan_date:
            history.sent.setdefault(customer_id, []).append((day, channel, phase))
    history.addresses = {
        contact_key(channel, address)
        for channel, address in conn.execute(
            "select channel, to_address from ops.outbox where plan_date = %s", (plan_date,)
        )
    }
    return history


def load_suppressions(
    conn: psycopg.Connection,
    customer_ids: list[str],
    phones: dict[str, str] | None = None,
    emails: dict[str, str] | None = None,
) -> dict[tuple, str]:
    """(customer_id, channel) -> suppression reason, for these customers.

    Every suppression applies, whatever day is planned: an opt-out received today must stop a
    replayed past day too (sending to someone who opted out is the one thing never allowed).
    ``phones`` (customer_id -> E.164 phone, customer_facts' ``phone``) adds the customers whose
    number is suppressed (``ops.address_suppressions``: a STOP from it, even one received
    before the customer was loaded). A phone or an email in ``ops.dead_contacts`` (``emails``:
    customer_id -> email) gives reason ``dead_contact`` on the channels it serves, unless a
    suppression above already names the channel.
    """
    rows = conn.execute(
        "select customer_id, channel, reason from ops.suppressions where customer_id = any(%s)",
        (customer_ids,),
    )
    out = {(c, ch): reason for c, ch, reason in rows}
    by_phone: dict[str, list[str]] = {}
    for customer_id, phone in (phones or {}).items():
        if phone:
            by_phone.setdefault(phone, []).append(customer_id)
    if by_phone:
        rows = conn.execute(
            "select address, reason from ops.address_suppressions "
            "where channel = 'sms' and address = any(%s)",
            (list(by_phone),),
        )
        for phone, reason in rows:
            for customer_id in by_phone[phone]:
                out.setdefault((customer_id, "sms"), reason)
    # The phone's consent stands for calls too: whatever stops SMS to it stops calls
    for (customer_id, channel), reason in list(out.items()):
        if channel == "sms":
            out.setdefault((customer_id, "call"), reason)
    for kind, addresses in ((PHONE, phones), (EMAIL, emails)):
        held = {c: normalize(kind, a) for c, a in (addresses or {}).items() if a}
        dead = dead_addresses(conn, kind, list(held.values()))
        if not dead:
            continue
        channels = [ch for ch, k in CHANNEL_KIND.items() if k == kind]
        for customer_id, address in held.items():
            if address in dead:
                for ch in channels:
                    out.setdefault((customer_id, ch), DEAD_CONTACT)
    return out


def load_calls_today(
    conn: psycopg.Connection, plan_date: date, settings: Settings
) -> dict[str, int]:
    """club -> the calls D already holds (outbox rows and control would-haves of an earlier run
    of the day), against the club's daily call capacity."""
    rows = conn.execute(
        sql.SQL(
            """
            select coalesce(f.club_id, ''), count(*)
            from (select customer_id from ops.outbox where plan_date = %(d)s and channel = 'call'
                  union all
                  select customer_id from ops.skips
                  where plan_date = %(d)s and reason = %(control)s and channel = 'call') day
            left join {} f using (customer_id)
            group by 1
            """
        ).format(facts_table(settings)),
        {"d": plan_date, "control": CONTROL_GROUP},
    )
    return dict(rows.fetchall())


NEXT_BEST_RELATION = "customer_next_best_offer"
SEND_HOUR_RELATION = "customer_send_hour"
SERVICES_RELATION = "int_services_catalog"


def _exists(conn: psycopg.Connection, settings: Settings, relation: str) -> bool:
    return conn.execute(
        "select to_regclass(%s)", (f'"{settings.dbt_schema}"."{relation}"',)
    ).fetchone()[0] is not None


def _require(conn: psycopg.Connection, settings: Settings, relation: str, why: str) -> None:
    if not _exists(conn, settings, relation):
        raise PlanningError(
            f"{settings.dbt_schema}.{relation} does not exist and {why}: build dbt first "
            "(`lifecycle build --date D`)"
        )


def load_next_best_offers(
    conn: psycopg.Connection, customer_ids: list[str], rules: Rules, settings: Settings
) -> dict[str, list[tuple[str, int]]]:
    """customer -> the (service, rank) customer_next_best_offer holds for them, best first.

    Raises RulesInvalid when an offer's catalog names a service the club does not have (the
    club's services are only known in the warehouse, so ``lifecycle rules validate`` cannot).
    """
    if not _exists(conn, settings, NEXT_BEST_RELATION):
        # customer_facts alone was built (by hand, or a build selecting it): nobody has a
        # ranking, so everyone gets the fallback, and the log says why
        log.warning(
            "%s.%s is not built: every offer from next_best_offer is its fallback "
            "(`lifecycle build --date D` builds it)", settings.dbt_schema, NEXT_BEST_RELATION
        )
        return {}
    _require(conn, settings, SERVICES_RELATION, "a step's offer is from: next_best_offer")
    services = {
        r[0]
        for r in conn.execute(
            sql.SQL("select service from {}").format(
                sql.Identifier(settings.dbt_schema, SERVICES_RELATION)
            )
        )
    }
    errors = offer_service_problems(rules, services)
    if errors:
        raise RulesInvalid(errors)
    out: dict[str, list[tuple[str, int]]] = {}
    rows = conn.execute(
        sql.SQL(
            "select customer_id, service, offer_rank from {} where customer_id = any(%s) "
            "order by customer_id, offer_rank"
        ).format(sql.Identifier(settings.dbt_schema, NEXT_BEST_RELATION)),
        (customer_ids,),
    )
    for customer_id, service, rank in rows:
        out.setdefault(customer_id, []).append((service, rank))
    return out


def load_send_minutes(
    conn: psycopg.Connection, customer_ids: list[str], min_visits: int, settings: Settings
) -> dict[str, int]:
    """customer -> usual local visit minute of the day (customer_send_hour), for those with at
    least ``min_visits`` visits behind it; the others are sent at the window's start."""
    _require(conn, settings, SEND_HOUR_RELATION, "policy.send_time.mode is habit")
    rows = conn.execute(
        sql.SQL(
            "select customer_id, usual_visit_minute from {} "
            "where customer_id = any(%s) and visits_counted >= %s"
        ).format(sql.Identifier(settings.dbt_schema, SEND_HOUR_RELATION)),
        (customer_ids, min_visits),
    )
    return {customer_id: minute for customer_id, minute in rows}
