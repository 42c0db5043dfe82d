"""Next-best offers and habit send times end to end: raw rows, the real dbt build on PostgreSQL,
planning, the outbox (the issue's "done when")."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import psycopg
import pytest

from lifecycle.insight.report import build_report
from lifecycle.pipeline import send_due
from lifecycle.planning.outbox import plan_day
from lifecycle.planning.preview import preview
from lifecycle.rules.errors import RulesInvalid
from lifecycle.rules.loading import parse_rules
from lifecycle.settings import Settings
from lifecycle.transform.dbt import build
from lifecycle.warehouse.migrations import migrate

pytestmark = pytest.mark.slow

D = date(2024, 6, 30)
KYIV = ZoneInfo("Europe/Kyiv")  # the club's zone, UTC+3 in summer

RULES = """
version: 1
policy:
  control_group: {percent: 0}
  send_window: {start: "10:00", end: "20:00"}
  send_time: {mode: habit, lead_minutes: 90, min_visits: 5, lookback_weeks: 4}
  next_best_offer: {regular_min_visits_30d: 4, tenure_band_days: 180, visits_band_30d: 4,
                    min_lookalikes: 3, min_share: 0.1}
phases:
  - name: cross_sell
    priority: 1
    audience: {field: days_since_purchase, gt: 90}
    channels: [sms]
    steps:
      - offer:
          from: next_best_offer
          catalog:
            personal_training: {title: "a personal training session at -20%", margin: 1.0}
            massage: {title: "a massage at -20%", margin: 0.8}
            spa: {title: "a spa day at -20%"}
          fallback: {code: club_pass, title: "a friend's day pass"}
        templates:
          sms: "Hi {{ first_name }}, {{ offer.title }} ({{ offer.source }})"
"""

# Customers created 2023-12-20 with a year bought 2024-01-01 (day 181 on D, the same tenure
# band). Regulars visit 8 times in the last 30 days.
LOOKALIKES = {f"l{i}": ["personal_training"] for i in range(1, 6)} | {"l6": ["massage"]}
SPECIAL = {
    "mas": ["massage"],  # trains at 19:00, bought massage, never personal training
    "own": ["personal_training", "massage", "spa"],  # owns every service: the fallback
    "owl": [],  # trains at 23:00: the latest the window allows
    "two": [],  # 2 visits only: the window's start, no look-alikes (not a regular)
}
HOURS = {"mas": 19, "own": 12, "owl": 23, "two": 18}


def _local(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime.combine(day, datetime.min.time(), tzinfo=KYIV) + timedelta(
        hours=hour, minutes=minute
    )


def _load(url: str) -> None:
    customers = list(LOOKALIKES) + list(SPECIAL)
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        for n, cid in enumerate(customers):
            cur.execute(
                "insert into raw.customers (customer_id, first_name, email, phone, timezone, "
                "created_at) values (%s, 'Olena', %s, %s, 'Europe/Kyiv', '2023-12-20 10:00+00')",
                (cid, f"{cid}@example.com", f"+38067100{n:04d}"),
            )
            cur.execute(
                "insert into raw.memberships (membership_id, customer_id, product, purchased_on, "
                "starts_on, ends_on, price, status) values (%s, %s, 'year', '2024-01-01', "
                "'2024-01-01', '2024-12-31', 9000, 'active')",
                (f"m-{cid}", cid),
            )
            hour = HOURS.get(cid, 8)
            days = 2 if cid == "two" else 8
            for k in range(days):
                # every third day, on D - 1, D - 4, ...: the last 30 days, a minute apart
                cur.execute(
                    "insert into raw.visits (visit_id, customer_id, visited_at) "
                    "values (%s, %s, %s)",
                    (f"v-{cid}-{k}", cid, _local(D - timedelta(days=1 + 3 * k), hour, k % 3)),
                )
            if cid == "mas":  # an odd morning visit does not move the usual time
                cur.execute(
                    "insert into raw.visits (visit_id, customer_id, visited_at) "
                    "values ('v-mas-odd', 'mas', %s)",
                    (_local(D - timedelta(days=2), 7),),
                )
            for service in LOOKALIKES.get(cid, SPECIAL.get(cid, [])):
                cur.execute(
                    "insert into raw.purchases (purchase_id, customer_id, service, purchased_at, "
                    "amount) values (%s, %s, %s, '2024-02-01 10:00+00', 500)",
                    (f"p-{cid}-{service}", cid, service),
                )


@pytest.fixture(scope="module")
def built(
    server_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Settings]]:
    name = "t_nbo_" + uuid.uuid4().hex[:10]
    admin = server_url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    url = server_url.rsplit("/", 1)[0] + "/" + name
    migrate(url)
    _load(url)
    settings = Settings()
    rules = parse_rules(RULES, "nbo.yml")
    build(url, D, settings=settings, rules=rules, unit_tests=False,
          target_path=tmp_path_factory.mktemp("dbt"))
    yield url, settings
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')


def _outbox(url: str) -> dict[str, dict]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "select customer_id, send_at, window_end_at, offer_code, offer_source, body "
            "from ops.outbox where plan_date = %s",
            (D,),
        ).fetchall()
    return {
        r[0]: {"send_at": r[1].astimezone(KYIV), "window_end": r[2].astimezone(KYIV),
               "offer_code": r[3], "offer_source": r[4], "body": r[5]}
        for r in rows
    }


def test_offers_and_send_times_from_the_warehouse(built: tuple[str, Settings]) -> None:
    url, settings = built
    with psycopg.connect(url) as conn:
        hours = dict(conn.execute(
            "select customer_id, usual_visit_minute from analytics.customer_send_hour"
        ).fetchall())
        ranked = conn.execute(
            "select service, offer_rank, lookalikes, lookalikes_buying "
            "from analytics.customer_next_best_offer where customer_id = 'mas' order by offer_rank"
        ).fetchall()
    assert hours["mas"] == 19 * 60 + 1  # the median of 19:00-19:02, the 07:00 visit ignored
    # mas's look-alikes: the other 8 regulars (owl too); 6 bought personal training (l1-l5, own)
    assert ranked[0] == ("personal_training", 1, 8, 6)
    assert "massage" not in [r[0] for r in ranked]  # mas bought it

    rules = parse_rules(RULES, "nbo.yml")
    # the preview shows which offer each member would get and why, and the local send time
    result = preview(url, rules, D, settings=settings, samples=20)
    cross = next(p for p in result.phases if p.name == "cross_sell")
    assert cross.by_offer["club_pass (fallback)"] == 2  # own (owns all) and two (no look-alikes)
    sample = next(s for s in cross.samples if s.customer_id == "mas")
    assert (sample.offer_code, sample.offer_source, sample.send_at_local) == (
        "personal_training", "next_best", "17:31"
    )

    plan_day(url, rules, D, settings)
    out = _outbox(url)

    mas = out["mas"]
    assert (mas["offer_code"], mas["offer_source"]) == ("personal_training", "next_best")
    assert "a personal training session at -20% (next_best)" in mas["body"]
    # 90 minutes before the usual 19:01, inside the 10:00-20:00 window, in the member's zone
    assert mas["send_at"] == _local(D, 17, 31)
    assert mas["send_at"] < mas["window_end"]

    own = out["own"]
    assert (own["offer_code"], own["offer_source"]) == ("club_pass", "fallback")
    assert own["send_at"] == _local(D, 10, 31)  # 12:01 - 90 minutes

    two = out["two"]  # 2 visits: fewer than min_visits, so the window's start
    assert two["send_at"] == _local(D, 10, 0)
    assert (two["offer_code"], two["offer_source"]) == ("club_pass", "fallback")

    owl = out["owl"]  # 23:01 - 90 minutes is after the window: 30 minutes before it closes
    assert owl["send_at"] == _local(D, 19, 30)

    # sent (sandbox), the report shows the offers by why and the messages by local hour
    send_due(url, D, clock="logical", settings=settings)
    page, _ = build_report(url, D, D, settings)
    section = page[page.index('<section id="offers">'):]
    section = section[:section.index("</section>")]
    assert "<td>personal_training</td><td>next_best</td>" in section
    assert "<td>club_pass</td><td>fallback</td><td>2</td>" in section
    assert "by local hour of send_at" in section



def test_window_start_mode_keeps_todays_behaviour(built: tuple[str, Settings]) -> None:
    url, settings = built
    with psycopg.connect(url) as conn:  # another test may have planned D
        conn.execute("delete from ops.sandbox_messages")
        conn.execute("delete from ops.outbox where plan_date = %s", (D,))
    rules = parse_rules(RULES.replace("mode: habit", "mode: window_start"), "nbo.yml")
    result = preview(url, rules, D, settings=settings, samples=20)
    cross = next(p for p in result.phases if p.name == "cross_sell")
    assert len(cross.samples) == len(LOOKALIKES) + len(SPECIAL)
    assert {s.send_at_local for s in cross.samples} == {"10:00"}


def test_a_catalog_service_the_club_does_not_have_is_located(
    built: tuple[str, Settings],
) -> None:
    url, settings = built
    text = RULES.replace("            spa: {title:", "            sauna: {title:")
    with pytest.raises(RulesInvalid) as err:
        preview(url, parse_rules(text, "nbo.yml"), D, settings=settings)
    message = str(err.value)
    assert "nbo.yml:" in message and "catalog.sauna" in message
    assert "not in the club's services" in message and "spa" in message


def test_a_popular_hour_does_not_burst_the_provider_rate(fresh_db: str) -> None:
    """Everyone training at 19:00 is due at 17:30: the same send_at. The shared throttle still
    spreads them at the provider's rate: the stand-in, which refuses (429) anything faster
    than its limit, accepts them all without one refusal."""
    from lifecycle.delivery.dispatch import dispatch, throttles_for
    from lifecycle.delivery.standin import StandinServer
    from lifecycle.delivery.transports import get_transport
    from lifecycle.planning.outbox import send_times

    rules = parse_rules(RULES, "nbo.yml")
    rate, n = 40.0, 120
    times = {send_times(D, KYIV, rules, 24, 19 * 60 + k % 3) for k in range(n)}
    send_at, window_end, deadline = sorted(times)[0]
    assert len({t[0] for t in times}) == 3  # 17:30, 17:31, 17:32: a burst of due messages
    with psycopg.connect(fresh_db) as conn, conn.cursor() as cur:
        cur.executemany(
            "insert into ops.outbox (message_key, plan_date, customer_id, phase, step, cycle_key,"
            " channel, to_address, body, send_at, window_end_at, deadline_at, offer_code,"
            " offer_source) values (%s, %s, %s, 'cross_sell', 1, 'M', 'sms', %s, 'Hi', %s, %s,"
            " %s, 'personal_training', 'next_best')",
            [(f"k{i}", D, f"C{i}", f"+38067{i:07d}", send_at, window_end, deadline)
             for i in range(n)],
        )
    with StandinServer() as server:
        server.provider.configure(max_rps=rate * 1.15, max_burst_s=0.5)
        settings = Settings(transport="standin", standin_url=server.url,
                            twilio_segments_per_s=rate, dispatch_batch_size=20)
        transport = get_transport("standin", fresh_db, settings)
        try:
            dispatch(fresh_db, transport, now=send_at + timedelta(minutes=5), settings=settings,
                     throttles=throttles_for(fresh_db, settings))
        finally:
            transport.close()
        assert len(server.provider.accepted) == n
        assert server.provider.rate_limited == 0
    with psycopg.connect(fresh_db) as conn:
        statuses = conn.execute("select status, count(*) from ops.outbox group by 1").fetchall()
    assert statuses == [("sent", n)]
