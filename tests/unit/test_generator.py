"""The synthetic club: deterministic, valid by the loader, and rich enough to put customers in
every lifecycle phase."""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lifecycle.data.club import _add_months, _Calendar
from lifecycle.data.contract import FILES
from lifecycle.data.csv_bytes import csv_block
from lifecycle.data.generator import FILE_ORDER, generate
from lifecycle.data.loader import load_dir
from lifecycle.warehouse.migrations import migrate

START, END = date(2025, 1, 1), date(2026, 6, 30)


def read_bytes(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


def test_same_seed_gives_byte_identical_files(tmp_path: Path) -> None:
    a = generate(2500, START, END, 5, out_dir=tmp_path / "a")
    b = generate(2500, START, END, 5, out_dir=tmp_path / "b")
    first, second = read_bytes(tmp_path / "a"), read_bytes(tmp_path / "b")
    assert sorted(first) == sorted(FILE_ORDER)  # services.csv is left to the shipped catalog
    assert first == second
    assert a.rows == b.rows and a.rows["visits.csv"] > 0


def test_different_seed_gives_different_data(tmp_path: Path) -> None:
    generate(500, START, END, 5, out_dir=tmp_path / "a")
    generate(500, START, END, 6, out_dir=tmp_path / "b")
    first, second = read_bytes(tmp_path / "a"), read_bytes(tmp_path / "b")
    assert all(first[name] != second[name] for name in FILE_ORDER)


def test_headers_and_ids_follow_the_contract(tmp_path: Path) -> None:
    generate(300, START, END, 1, out_dir=tmp_path)
    for name in FILE_ORDER:
        with (tmp_path / name).open(newline="", encoding="utf-8") as f:
            header = next(csv.reader(f))
        assert header == list(FILES[name].required_columns)
    lines = {n: (tmp_path / n).read_text(encoding="utf-8").splitlines() for n in FILE_ORDER}
    assert lines["customers.csv"][1].startswith("C0000001,")
    assert lines["customers.csv"][-1].startswith("C0000300,")
    assert lines["memberships.csv"][1].startswith("M00000001,C")
    assert lines["visits.csv"][1].startswith("V000000001,C")
    assert lines["purchases.csv"][1].startswith("P00000001,C")


def test_zero_customers_writes_headers_only(tmp_path: Path) -> None:
    report = generate(0, START, END, 1, out_dir=tmp_path)
    assert set(report.rows.values()) == {0}
    assert all(len((tmp_path / n).read_text().splitlines()) == 1 for n in FILE_ORDER)


@pytest.fixture(scope="module")
def club(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    path = tmp_path_factory.mktemp("club")
    report = generate(4000, START, END, 11, out_dir=path, club_timezone="Europe/Kyiv")
    return path, report.rows


@pytest.fixture(scope="module")
def loaded_club(server_url: str, club: tuple[Path, dict[str, int]]) -> Iterator[str]:
    """The club loaded by load_dir into its own database, shared by the read-only tests."""
    path, rows = club
    name = "t_club_" + uuid.uuid4().hex[:8]
    admin = server_url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    url = server_url.rsplit("/", 1)[0] + "/" + name
    migrate(url)
    report = load_dir(url, path, club_timezone="Europe/Kyiv")
    assert report.rows == rows  # every generated file passes the loader, every row loads
    yield url
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')


def scalar(conn: psycopg.Connection, query: str, *params: object):
    return conn.execute(query, params).fetchone()[0]


def test_generated_club_has_every_behaviour(loaded_club: str) -> None:
    with psycopg.connect(loaded_club) as conn:
        members = scalar(conn, "select count(distinct customer_id) from raw.memberships")
        assert members > 3800
        never = scalar(conn, """
            select count(*) from (select distinct customer_id from raw.memberships) m
            where not exists (select 1 from raw.visits v where v.customer_id = m.customer_id)""")
        assert 0.05 * members < never < 0.25 * members
        # Consecutive memberships of a customer: early renewal, short gap, return, none.
        gaps = dict(conn.execute("""
            with m as (
                select customer_id, ends_on,
                       lead(purchased_on) over (partition by customer_id order by purchased_on)
                           as next_purchase
                from raw.memberships)
            select case when next_purchase is null then 'none'
                        when next_purchase <= ends_on then 'early'
                        when next_purchase < ends_on + 30 then 'gap'
                        else 'return' end, count(*)
            from m group by 1""").fetchall())
        assert gaps["early"] > 300 and gaps["gap"] > 100 and gaps["return"] > 50
        lapsed = scalar(conn, """
            select count(*) from (
                select customer_id, max(ends_on) as last_end from raw.memberships
                group by customer_id) m
            where last_end < %s::date - 30""", END)
        assert lapsed > 200
        regulars = scalar(conn, """
            select count(distinct customer_id) from (
                select customer_id, count(*) over (
                    partition by customer_id order by visited_at
                    range between current row and interval '30 days' following) as n
                from raw.visits) v
            where n >= 4""")
        assert regulars > 0.3 * members
        # Drop-offs: were regular, still hold a running membership, not seen for 60+ days.
        dropoffs = scalar(conn, """
            select count(*) from raw.memberships m
            where m.ends_on >= %s::date and m.starts_on < %s::date - 120
              and (select max(visited_at) from raw.visits v where v.customer_id = m.customer_id)
                  < %s::date - 60""", END, END, END)
        assert dropoffs > 50
        statuses = dict(conn.execute(
            "select status, count(*) from raw.memberships group by 1").fetchall())
        assert statuses["frozen"] > 10 and statuses["cancelled"] > 10
        assert statuses["active"] > 0.9 * sum(statuses.values())
        products = dict(conn.execute(
            "select product, count(*) from raw.memberships group by 1").fetchall())
        assert set(products) == {"gym_12m", "gym_6m", "gym_3m", "gym_1m"}
        assert products["gym_12m"] > sum(products.values()) / 3
        categories = dict(conn.execute("""
            select case when service in ('solarium', 'group_class') then 'addon'
                        else 'cross_sell' end, count(distinct customer_id)
            from raw.purchases group by 1""").fetchall())
        assert categories["addon"] > 200 and categories["cross_sell"] > 100


def test_generated_contacts_are_imperfect_on_purpose(loaded_club: str) -> None:
    with psycopg.connect(loaded_club) as conn:
        n = scalar(conn, "select count(*) from raw.customers")
        phones = dict(conn.execute(r"""
            select case when phone is null then 'empty'
                        when phone ~ '^\+[1-9][0-9]{7,14}$' then 'e164'
                        when phone ~ '^0[0-9]{9}$' then 'national'
                        else 'other' end, count(*)
            from raw.customers group by 1""").fetchall())
        assert phones["empty"] > 0 and phones["national"] > 0 and phones["other"] > 0
        assert 0.03 * n < n - phones["e164"] < 0.08 * n
        emails = dict(conn.execute(r"""
            select case when email is null then 'empty'
                        when email !~ '^[^@\s]+@[^@\s]+\.[^@\s]+$' then 'malformed'
                        when email <> lower(email) then 'mixed_case'
                        else 'ok' end, count(*)
            from raw.customers group by 1""").fetchall())
        assert emails["empty"] > 0 and emails["malformed"] > 0 and emails["mixed_case"] > 0
        assert emails["ok"] > 0.8 * n
        zones = dict(conn.execute(
            "select coalesce(timezone, ''), count(*) from raw.customers group by 1").fetchall())
        assert {"Europe/Kyiv", "Europe/Warsaw", "Europe/Berlin", "America/New_York", ""} == set(
            zones)
        assert zones["Europe/Kyiv"] > 0.7 * n
        opted_out = dict(conn.execute(
            "select channel, avg((not opted_in)::int) from raw.consents group by 1").fetchall())
        assert 0.01 < opted_out["sms"] < 0.1 and 0.01 < opted_out["email"] < 0.1


def test_visits_fall_in_opening_hours_inside_a_membership(loaded_club: str) -> None:
    with psycopg.connect(loaded_club) as conn:
        hours = conn.execute("""
            select min(h), max(h) from (
                select extract(hour from v.visited_at at time zone
                               coalesce(c.timezone, 'Europe/Kyiv')) as h
                from raw.visits v join raw.customers c using (customer_id)) x""").fetchone()
        assert hours == (7, 21)
        outside = scalar(conn, """
            select count(*) from raw.visits v join raw.customers c using (customer_id)
            where not exists (
                select 1 from raw.memberships m
                where m.customer_id = v.customer_id
                  and (v.visited_at at time zone coalesce(c.timezone, 'Europe/Kyiv'))::date
                      between m.starts_on and m.ends_on)""")
        assert outside == 0
        span = conn.execute("""
            select min(purchased_on), max(purchased_on) from raw.memberships""").fetchone()
        assert span[0] >= START and span[1] <= END


@pytest.mark.parametrize("day", [30, 90, 250, 400, (END - START).days])
def test_many_customers_are_in_a_phase_on_a_typical_day(loaded_club: str, day: int) -> None:
    as_of = START + timedelta(days=day)
    with psycopg.connect(loaded_club) as conn:
        # activation: day 20-30 of a membership, not one visit since buying it
        activation = scalar(conn, """
            select count(*) from raw.memberships m
            where %(d)s - m.purchased_on between 20 and 30
              and not exists (select 1 from raw.visits v where v.customer_id = m.customer_id
                              and v.visited_at::date between m.purchased_on and %(d)s)
            """.replace("%(d)s", "%s"), as_of, as_of)
        # regular: at least 4 visits in the last 30 days
        regular = scalar(conn, """
            select count(*) from (
                select customer_id from raw.visits
                where visited_at::date between %s - 29 and %s
                group by 1 having count(*) >= 4) r""", as_of, as_of)
        # stimulation: day 60-90 of a membership with a regular pattern
        stimulation = scalar(conn, """
            select count(*) from raw.memberships m
            where %s - m.purchased_on between 60 and 90
              and (select count(*) from raw.visits v where v.customer_id = m.customer_id
                   and v.visited_at::date between %s - 29 and %s) >= 4""", as_of, as_of, as_of)
        # retention: a membership ending in the next 30-60 days
        retention = scalar(conn, """
            select count(*) from raw.memberships where ends_on between %s + 30 and %s + 60""",
            as_of, as_of)
        # return: the last membership ended 30-60 days ago, nothing bought since
        returning = scalar(conn, """
            select count(*) from (
                select customer_id, max(ends_on) as last_end from raw.memberships
                where purchased_on <= %s group by 1) m
            where %s - m.last_end between 30 and 60""", as_of, as_of)
    # Of 4000 customers, on every such day.
    assert activation >= 10
    assert regular >= 150
    assert retention >= 50
    if day >= 90:  # the club opened on START: nobody is 60 days in, or gone, before that
        assert stimulation >= 50
        assert returning >= 15


def content(url: str) -> dict[str, str]:
    """A checksum of each raw table's loaded columns, in id order."""
    out = {}
    with psycopg.connect(url) as conn:
        conn.execute("set timezone = 'UTC'")
        for name in FILE_ORDER:
            spec = FILES[name]
            cols = ", ".join(spec.column_names)
            out[name] = scalar(
                conn,
                f"select md5(string_agg(row({cols})::text, '|' order by {', '.join(spec.key)}))"
                f" from {spec.table}",
            )
    return out


def test_fast_path_loads_what_the_csv_path_loads(fresh_db: str, tmp_path: Path) -> None:
    report = generate(1500, START, END, 3, out_dir=tmp_path, url=fresh_db)
    assert report.loaded
    fast = content(fresh_db)
    with psycopg.connect(fresh_db) as conn:
        counts = {n: scalar(conn, f"select count(*) from {FILES[n].table}") for n in FILE_ORDER}
        assert scalar(conn, "select count(*) from raw.customers where club_id <> 'main'") == 0
    assert counts == report.rows
    again = load_dir(fresh_db, tmp_path)
    assert all(f.inserted == 0 and f.updated == f.rows for f in again.files.values())
    assert content(fresh_db) == fast


def test_fast_path_upserts_into_tables_that_hold_rows(fresh_db: str) -> None:
    first = generate(800, START, END, 3, url=fresh_db)
    before = content(fresh_db)
    generate(800, START, END, 3, url=fresh_db)
    assert content(fresh_db) == before
    generate(1000, START, END, 3, url=fresh_db)  # the first 800 are the same customers
    with psycopg.connect(fresh_db) as conn:
        assert scalar(conn, "select count(*) from raw.customers") == 1000
        assert scalar(conn, "select count(*) from raw.visits") > first.rows["visits.csv"]


def test_a_failed_fast_path_load_leaves_nothing(fresh_db: str) -> None:
    with psycopg.connect(fresh_db) as conn:
        conn.execute("alter table raw.visits add constraint no_visits check (false)")
    with pytest.raises(psycopg.errors.CheckViolation):
        generate(300, START, END, 3, url=fresh_db)
    with psycopg.connect(fresh_db) as conn:
        assert scalar(conn, "select count(*) from raw.customers") == 0


# -- the vectorised pieces against plain Python ------------------------------------------

values = st.lists(
    st.text(alphabet=st.characters(blacklist_characters=',"\r\n\x00',
                                   blacklist_categories=("Cs",)), max_size=12),
    min_size=3, max_size=3,
)


@settings(max_examples=200, deadline=None)
@given(rows=st.lists(values, min_size=1, max_size=30))
def test_csv_block_matches_the_csv_module(rows: list[list[str]]) -> None:
    cols = [np.array([r[j].encode() for r in rows], dtype="S") for j in range(3)]
    # numpy's fixed-width bytes drop trailing NULs, which the alphabet excludes anyway.
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n", quoting=csv.QUOTE_NONE, escapechar=None).writerows(rows)
    assert csv_block(cols).decode() == buf.getvalue()


@settings(max_examples=300, deadline=None)
@given(start=st.dates(date(2000, 1, 1), date(2040, 1, 1)), months=st.sampled_from([1, 3, 6, 12]))
def test_add_months_clamps_to_the_month_end(start: date, months: int) -> None:
    base = np.datetime64(date(2000, 1, 1), "D")
    got = _add_months(base, np.array([(start - date(2000, 1, 1)).days]), np.array([months]))
    y, m = divmod(start.month - 1 + months, 12)
    first_next = date(start.year + y + (m + 1) // 12, (m + 1) % 12 + 1, 1)
    last_day = (first_next - timedelta(days=1)).day
    expected = date(start.year + y, m + 1, min(start.day, last_day))
    assert date(2000, 1, 1) + timedelta(days=int(got[0])) == expected


ZONES = ["Europe/Kyiv", "Europe/Warsaw", "Europe/Berlin", "America/New_York"]
CALENDAR = _Calendar(date(2024, 1, 1), 1100, ZONES)


@settings(max_examples=300, deadline=None)
@given(day=st.integers(-30, 1100), seconds=st.integers(7 * 3600, 22 * 3600 - 1),
       zone=st.integers(0, 3))
def test_timestamps_carry_the_zone_offset_of_that_local_time(day, seconds, zone) -> None:
    text = CALENDAR.timestamp(np.array([day]), np.array([seconds]), np.array([zone]))[0].decode()
    local = datetime(2024, 1, 1) + timedelta(days=day, seconds=seconds)
    expected = local.replace(tzinfo=ZoneInfo(ZONES[zone]))
    assert datetime.fromisoformat(text) == expected
    assert text == expected.isoformat()
