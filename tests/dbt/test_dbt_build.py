"""The real dbt project built on a real PostgreSQL: raw rows in, customer_facts rows out."""

from __future__ import annotations

import json
import shutil
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from psycopg.rows import dict_row

from lifecycle.data.generator import generate
from lifecycle.settings import Settings
from lifecycle.transform.dbt import DbtError, build, run_dbt

pytestmark = pytest.mark.slow

AS_OF = date(2024, 6, 30)

CONTRACT = [
    ("customer_id", "text"),
    ("club_id", "text"),
    ("first_name", "text"),
    ("email", "text"),
    ("phone", "text"),
    ("email_valid", "boolean"),
    ("phone_valid", "boolean"),
    ("sms_consent", "boolean"),
    ("email_consent", "boolean"),
    ("sms_contactable", "boolean"),
    ("email_contactable", "boolean"),
    ("timezone", "text"),
    ("as_of_date", "date"),
    ("customer_since", "date"),
    ("tenure_days", "integer"),
    ("membership_id", "text"),
    ("product", "text"),
    ("purchased_on", "date"),
    ("starts_on", "date"),
    ("ends_on", "date"),
    ("membership_status", "text"),
    ("has_active_membership", "boolean"),
    ("days_since_purchase", "integer"),
    ("days_until_end", "integer"),
    ("days_since_end", "integer"),
    ("has_renewal", "boolean"),
    ("memberships_total", "integer"),
    ("visits_total", "integer"),
    ("visits_since_purchase", "integer"),
    ("visits_last_7d", "integer"),
    ("visits_last_30d", "integer"),
    ("visits_last_90d", "integer"),
    ("last_visit_date", "date"),
    ("addon_purchases_since_purchase", "integer"),
    ("cross_sell_purchases_since_purchase", "integer"),
    ("addon_purchases_last_30d", "integer"),
    ("cross_sell_purchases_last_90d", "integer"),
    ("lifetime_revenue", "numeric(14,2)"),
    ("renewal_membership_id", "text"),
    ("gap_days_before_current", "integer"),
    ("days_since_last_visit", "integer"),
    ("addon_purchases_last_90d", "integer"),
    ("cross_sell_purchases_last_30d", "integer"),
    ("last_addon_purchase_on", "date"),
    ("last_cross_sell_purchase_on", "date"),
    ("lifetime_purchases", "integer"),
    ("rfm_recency_days", "integer"),
    ("rfm_frequency", "integer"),
    ("rfm_monetary", "numeric(14,2)"),
    ("r_score", "integer"),
    ("f_score", "integer"),
    ("m_score", "integer"),
    ("rfm_segment", "text"),
]

# Customers around the edges; times are UTC, the club's zone is Europe/Kyiv (UTC+3 in summer).
RAW = """
insert into raw.customers (customer_id, first_name, email, phone, timezone, created_at) values
  ('nat',   'Anna', '  Anna.Smith@Example.COM ', '0671234567',           'Europe/Kyiv',
   '2024-01-10 10:00+00'),
  ('bad',   'Ihor', 'not-an-email',              '12345',                'Mars/Olympus',
   '2024-03-01 10:00+00'),
  ('intl',  'Bob',  'Bob@Example.org',           '+1 (212) 555-0100',    'america/new_york',
   '2024-02-01 10:00+00'),
  ('zeros', 'Olha', 'olha@example.com',          '00380 (67) 765.43.21', '',
   '2023-12-01 10:00+00'),
  -- 01:30 on 1 July in Kyiv: not yet a customer on 30 June
  ('late',  'Late', 'late@example.com',          '+380501112233',        null,
   '2024-06-30 22:30+00');

insert into raw.memberships
  (membership_id, customer_id, product, purchased_on, starts_on, ends_on, price, status) values
  ('nat-1',   'nat',   'month', '2024-06-10', '2024-06-10', '2024-07-09', 1000, 'active'),
  -- renewal bought before the current period ends
  ('nat-2',   'nat',   'month', '2024-06-29', '2024-07-10', '2024-08-09', 1000, 'active'),
  ('intl-1',  'intl',  'quarter', '2024-04-30', '2024-05-01', '2024-07-31', 2500, 'frozen'),
  ('zeros-1', 'zeros', 'quarter', '2024-01-01', '2024-01-01', '2024-03-31', 2400, 'active'),
  ('zeros-2', 'zeros', 'quarter', '2024-06-01', '2024-06-01', '2024-08-31', 2400, 'cancelled');

insert into raw.visits (visit_id, customer_id, visited_at) values
  ('v1', 'nat',  '2024-06-09 21:30+00'),  -- 00:30 on 10 June in Kyiv: the purchase day
  ('v2', 'nat',  '2024-06-20 08:00+00'),
  ('v3', 'nat',  '2024-06-29 21:30+00'),  -- 30 June in Kyiv: D
  ('v4', 'nat',  '2024-06-30 21:30+00'),  -- 1 July in Kyiv: after D
  ('v5', 'nat',  '2024-06-09 20:00+00'),  -- 23:00 on 9 June in Kyiv: before the purchase
  ('v6', 'intl', '2024-07-01 02:00+00'),  -- 22:00 on 30 June in New York: D
  ('v7', 'zeros', '2024-03-15 09:00+00');

insert into raw.purchases (purchase_id, customer_id, service, purchased_at, amount) values
  ('p1', 'nat',  'Solarium', '2024-06-15 10:00+00', 150),
  ('p2', 'nat',  'massage',  '2024-07-01 10:00+00', 900),  -- after D
  ('p3', 'intl', 'massage',  '2024-04-15 10:00+00', 800),
  ('p4', 'intl', 'smoothie', '2024-06-01 10:00+00', 5);

insert into raw.consents (customer_id, channel, opted_in, updated_at) values
  ('bad',  'sms',   true,  '2024-03-01 10:00+00'),
  ('intl', 'email', false, '2024-02-01 10:00+00');
"""


def _load(url: str, sql: str) -> None:
    with psycopg.connect(url) as conn:
        conn.execute(sql)


def _facts(url: str) -> dict[str, dict]:
    with psycopg.connect(url, row_factory=dict_row) as conn:
        rows = conn.execute("select * from analytics.customer_facts").fetchall()
    return {row["customer_id"]: row for row in rows}


def _service_purchases(url: str) -> dict[tuple[str, str], dict]:
    with psycopg.connect(url, row_factory=dict_row) as conn:
        rows = conn.execute("select * from analytics.customer_service_purchases").fetchall()
    return {(row["customer_id"], row["service"]): row for row in rows}


def test_build_computes_customer_facts_from_raw_rows(fresh_db: str, tmp_path: Path) -> None:
    _load(fresh_db, RAW)

    build(fresh_db, as_of=AS_OF, target_path=tmp_path)

    facts = _facts(fresh_db)
    assert set(facts) == {"nat", "bad", "intl", "zeros"}  # 'late' joined after D, local time

    nat = facts["nat"]
    assert nat["phone"] == "+380671234567"
    assert nat["email"] == "anna.smith@example.com"
    assert (nat["phone_valid"], nat["email_valid"]) == (True, True)
    # no consent rows: the default (opted in)
    assert (nat["sms_consent"], nat["email_consent"]) == (True, True)
    assert (nat["sms_contactable"], nat["email_contactable"]) == (True, True)
    assert nat["club_id"] == "main"
    assert nat["timezone"] == "Europe/Kyiv"
    assert nat["as_of_date"] == AS_OF
    assert nat["customer_since"] == date(2024, 1, 10)
    assert nat["tenure_days"] == 172
    assert nat["membership_id"] == "nat-1"
    assert nat["membership_status"] == "active"
    assert nat["has_active_membership"] is True
    assert nat["days_since_purchase"] == 20
    assert nat["days_until_end"] == 9
    assert nat["days_since_end"] is None
    assert nat["has_renewal"] is True
    assert nat["memberships_total"] == 2
    assert nat["visits_total"] == 4
    assert nat["visits_since_purchase"] == 3
    assert nat["visits_last_7d"] == 1
    assert nat["visits_last_30d"] == 4
    assert nat["visits_last_90d"] == 4
    assert nat["last_visit_date"] == AS_OF
    assert nat["addon_purchases_since_purchase"] == 1
    assert nat["addon_purchases_last_30d"] == 1
    assert nat["cross_sell_purchases_since_purchase"] == 0
    assert nat["lifetime_revenue"] == Decimal("2150.00")
    assert nat["renewal_membership_id"] == "nat-2"
    assert nat["gap_days_before_current"] is None  # the first membership
    assert nat["days_since_last_visit"] == 0
    assert (nat["addon_purchases_last_90d"], nat["cross_sell_purchases_last_30d"]) == (1, 0)
    assert nat["last_addon_purchase_on"] == date(2024, 6, 15)
    assert nat["last_cross_sell_purchase_on"] is None  # the massage is after D
    # two memberships (the renewal bought 29 June) and the solarium
    assert nat["lifetime_purchases"] == 3
    assert (nat["rfm_recency_days"], nat["rfm_frequency"]) == (1, 3)
    assert nat["rfm_monetary"] == Decimal("2150.00")

    bad = facts["bad"]
    assert bad["phone"] == "+12345"
    assert (bad["phone_valid"], bad["email_valid"]) == (False, False)
    assert bad["sms_consent"] is True
    assert (bad["sms_contactable"], bad["email_contactable"]) == (False, False)
    assert bad["timezone"] == "Europe/Kyiv"  # unknown zone: the club's
    assert bad["membership_id"] is None
    assert bad["membership_status"] is None
    assert bad["days_since_purchase"] is None
    assert bad["has_active_membership"] is False
    assert bad["has_renewal"] is False
    assert (bad["memberships_total"], bad["visits_total"]) == (0, 0)
    assert bad["lifetime_revenue"] == Decimal("0.00")
    assert bad["days_since_last_visit"] is None
    assert (bad["lifetime_purchases"], bad["rfm_frequency"], bad["rfm_monetary"]) == (
        0,
        0,
        Decimal("0.00"),
    )
    assert (bad["r_score"], bad["f_score"], bad["m_score"]) == (None, None, None)
    assert bad["rfm_segment"] == "guest"

    intl = facts["intl"]
    assert intl["phone"] == "+12125550100"
    assert intl["email"] == "bob@example.org"
    assert intl["timezone"] == "America/New_York"
    assert (intl["sms_contactable"], intl["email_contactable"]) == (True, False)
    assert intl["membership_status"] == "frozen"
    assert intl["has_active_membership"] is True
    assert intl["days_since_purchase"] == 61
    assert (intl["visits_last_7d"], intl["last_visit_date"]) == (1, AS_OF)
    assert intl["cross_sell_purchases_last_90d"] == 1
    assert intl["cross_sell_purchases_since_purchase"] == 0
    assert intl["lifetime_revenue"] == Decimal("3305.00")
    assert intl["cross_sell_purchases_last_30d"] == 0
    assert intl["last_cross_sell_purchase_on"] == date(2024, 4, 15)
    # a membership, the massage and the smoothie (a purchase, though in no category)
    assert intl["lifetime_purchases"] == 3
    assert (intl["rfm_recency_days"], intl["rfm_monetary"]) == (29, Decimal("3305.00"))

    zeros = facts["zeros"]
    assert zeros["phone"] == "+380677654321"
    assert zeros["phone_valid"] is True
    assert zeros["timezone"] == "Europe/Kyiv"
    # the cancelled membership covering D is not current while an expired one exists
    assert zeros["membership_id"] == "zeros-1"
    assert zeros["membership_status"] == "expired"
    assert zeros["has_active_membership"] is False
    assert zeros["days_since_end"] == 91
    assert zeros["has_renewal"] is False
    assert zeros["memberships_total"] == 2
    assert zeros["visits_total"] == 1
    assert zeros["visits_last_90d"] == 0
    assert zeros["lifetime_revenue"] == Decimal("2400.00")
    assert zeros["days_since_last_visit"] == 107
    assert zeros["renewal_membership_id"] is None  # the later one is cancelled
    assert zeros["lifetime_purchases"] == 1  # a cancelled membership is no purchase

    # RFM: the repeat buyers nat and intl (three purchases each) set the boundaries, two rows
    # make groups 1 and 2; zeros (one purchase) is scored against them. Recency: zeros bought
    # longest ago, then intl, then nat. Frequency: nat and intl 3 each, a tie sharing group 1,
    # zeros 1 below it. Monetary: nat 2150 < zeros 2400 < intl 3305.
    scores = {c: (facts[c]["r_score"], facts[c]["f_score"], facts[c]["m_score"]) for c in facts}
    assert scores == {
        "nat": (2, 1, 1),
        "intl": (1, 1, 2),
        "zeros": (1, 1, 2),
        "bad": (None, None, None),
    }
    segments = {c: facts[c]["rfm_segment"] for c in facts}
    assert segments == {
        "nat": "hibernating",  # R 2, F 1
        "intl": "lost",  # R 1, F 1
        "zeros": "first_time_buyer",  # exactly one purchase, whatever the scores
        "bad": "guest",  # no purchase, no valid phone or email: not a loyal guest
    }


def test_build_computes_service_purchases_from_raw_rows(fresh_db: str, tmp_path: Path) -> None:
    _load(fresh_db, RAW)

    build(fresh_db, as_of=AS_OF, target_path=tmp_path)

    rows = _service_purchases(fresh_db)
    # nat's massage is dated after D: no row; bad and zeros bought no service
    assert set(rows) == {("nat", "solarium"), ("intl", "massage"), ("intl", "smoothie")}
    solarium = rows[("nat", "solarium")]
    assert solarium["category"] == "addon"
    assert solarium["as_of_date"] == AS_OF
    assert (solarium["first_purchased_on"], solarium["last_purchased_on"]) == (
        date(2024, 6, 15),
        date(2024, 6, 15),
    )
    assert solarium["purchases_total"] == 1
    assert solarium["purchases_since_membership_purchase"] == 1  # nat-1 bought 10 June
    assert (solarium["purchases_last_30d"], solarium["purchases_last_90d"]) == (1, 1)
    assert solarium["amount_total"] == Decimal("150.00")
    massage = rows[("intl", "massage")]
    assert massage["category"] == "cross_sell"
    # 15 April: 76 days before D, before intl-1 was bought on 30 April
    assert massage["purchases_since_membership_purchase"] == 0
    assert (massage["purchases_last_30d"], massage["purchases_last_90d"]) == (0, 1)
    smoothie = rows[("intl", "smoothie")]
    assert smoothie["category"] == "other"
    # 1 June is D - 29: the first day of the 30-day window
    assert (smoothie["purchases_last_30d"], smoothie["amount_total"]) == (1, Decimal("5.00"))


def _assert_yml_descriptions_are_the_comments(url: str, manifest: Path) -> None:
    """persist_docs (the project's own, macros/persist_docs.sql): each model and each of its
    documented columns carries its yml description as a comment, quotes and newlines
    included; nothing else is commented. Every column the yml documents exists (dbt's own
    persist_docs warned of one that does not; the project's comments only those that do)."""
    nodes = json.loads(manifest.read_text())["nodes"]
    models = {n["name"]: n for n in nodes.values() if n["resource_type"] == "model"}
    with psycopg.connect(url) as conn:
        tables = dict(conn.execute(
            "select c.relname, obj_description(c.oid, 'pg_class') from pg_class c "
            "where c.relnamespace = 'analytics'::regnamespace and c.relkind in ('r', 'v')"
        ).fetchall())
        columns = {(t, c): d for t, c, d in conn.execute(
            "select c.relname, a.attname, col_description(c.oid, a.attnum) "
            "from pg_class c join pg_attribute a on a.attrelid = c.oid "
            "where c.relnamespace = 'analytics'::regnamespace and c.relkind in ('r', 'v') "
            "and a.attnum > 0 and not a.attisdropped").fetchall()}
    assert set(models) <= set(tables)
    assert [(n, c) for n, node in models.items() for c in node["columns"]
            if (n, c) not in columns] == []
    documented = 0
    for name, node in models.items():
        assert tables[name] == (node["description"] or None), name
        for column, spec in node["columns"].items():
            if (name, column) in columns:
                assert columns[name, column] == (spec["description"] or None), (name, column)
                documented += bool(spec["description"])
    assert documented > 100
    assert any("'" in d for d in columns.values() if d)  # an apostrophe survived the quoting
    # the columns no yml documents carry no comment
    assert all(d is None for (t, c), d in columns.items()
               if t in models and not models[t]["columns"].get(c, {}).get("description"))


def test_customer_facts_matches_its_contract_and_is_indexed(fresh_db: str, tmp_path: Path) -> None:
    _load(fresh_db, RAW)

    build(fresh_db, as_of=AS_OF, target_path=tmp_path)
    # a second build replaces the table (and its index) without a name clash
    build(fresh_db, as_of=date(2024, 7, 15), target_path=tmp_path)
    # and every table and view it replaced carries the yml's descriptions again
    _assert_yml_descriptions_are_the_comments(fresh_db, tmp_path / "manifest.json")

    with psycopg.connect(fresh_db) as conn:
        columns = conn.execute(
            """
            select a.attname, format_type(a.atttypid, a.atttypmod)
            from pg_attribute a
            where a.attrelid = 'analytics.customer_facts'::regclass
              and a.attnum > 0 and not a.attisdropped
            order by a.attnum
            """
        ).fetchall()
        indexes = conn.execute(
            "select indexdef from pg_indexes "
            "where schemaname = 'analytics' and tablename = 'customer_facts'"
        ).fetchall()
    assert columns == CONTRACT
    indexed = sorted(d.split(" USING btree ")[1] for (d,) in indexes)
    assert indexed == [
        "(customer_id)",
        "(days_since_end)",
        "(days_since_purchase)",
        "(days_until_end)",
    ]
    assert sum("UNIQUE INDEX" in d for (d,) in indexes) == 1

    facts = _facts(fresh_db)
    assert set(facts) == {"nat", "bad", "intl", "zeros", "late"}
    nat = facts["nat"]
    # on 15 July the renewal bought in June is the current membership
    assert nat["as_of_date"] == date(2024, 7, 15)
    assert (nat["membership_id"], nat["days_since_purchase"]) == ("nat-2", 16)
    assert nat["has_renewal"] is False
    assert nat["renewal_membership_id"] is None
    # nat-1 ended 9 July, nat-2 started 10 July: renewed without a day's break
    assert nat["gap_days_before_current"] == 0
    # the 1 July visit and massage now count
    assert nat["visits_total"] == 5
    assert nat["cross_sell_purchases_last_90d"] == 1


def test_failing_data_test_makes_build_raise(fresh_db: str, tmp_path: Path) -> None:
    _load(
        fresh_db,
        """
        insert into raw.customers (customer_id, created_at) values ('c1', '2024-01-01 10:00+00');
        insert into raw.memberships
          (membership_id, customer_id, product, purchased_on, starts_on, ends_on, price, status)
        values ('m1', 'c1', 'month', '2024-06-01', '2024-06-30', '2024-06-01', 100, 'active');
        """,
    )

    with pytest.raises(DbtError) as failed:
        build(fresh_db, as_of=AS_OF, target_path=tmp_path)

    assert failed.value.returncode == 1
    assert "Failure in test checks_stg_club__memberships" in str(failed.value)
    with psycopg.connect(fresh_db) as conn:
        mart = conn.execute("select to_regclass('analytics.customer_facts')").fetchone()
    assert mart == (None,)  # the failed test kept the mart from being built


def test_the_days_build_says_which_check_failed_and_skips_what_depends_on_it(
    fresh_db: str,
) -> None:
    """The daily DAG's in-process build (lifecycle.transform.day_build): a model's failing
    `checks` test reports which of its checks failed and on how many rows, not only dbt's
    "Got 1 result"; the models after it are skipped, and their tasks say so."""
    from lifecycle.pipeline import rules_for_dbt
    from lifecycle.transform.day_build import build_day, graph, verdict
    from lifecycle.transform.dbt import ensure_manifest

    _load(fresh_db, """
        insert into raw.customers (customer_id, created_at) values ('c1', '2024-01-01 10:00+00');
        insert into raw.memberships
          (membership_id, customer_id, product, purchased_on, starts_on, ends_on, price, status)
        values ('m1', 'c1', 'month', '2024-06-01', '2024-06-30', '2024-06-01', 100, 'active'),
               ('m2', 'c1', 'month', '2024-06-01', '2024-06-30', '2024-06-02', 100, 'active');
        """)
    settings = Settings()

    results = build_day(fresh_db, AS_OF, rules_for_dbt(settings), settings=settings)

    nodes = graph(ensure_manifest(settings))
    assert verdict(results, nodes["stg_club__memberships"]) == (
        "stg_club__memberships: a test failed: checks_stg_club__memberships: fail Got 1 result, "
        "configured to fail if != 0: expression memberships_end_on_or_after_start: 2 rows")
    assert verdict(results, nodes["customer_facts"]) == "customer_facts: skipped"
    assert verdict(results, nodes["stg_club__customers"]) is None


def test_a_models_checks_fail_with_a_row_per_failing_check(
    fresh_db: str, tmp_path: Path
) -> None:
    """A model's one `checks` test (macros/test_checks.sql) runs all its checks in one query.
    A table declares its not-null columns NOT NULL (the project's post-hook
    set_not_null_columns) and the test reads the catalog for them; a view's are counted in
    the same scan as its accepted values. Once some rows are broken, it fails with a row per
    failing check and how many rows fail it; a check that holds gives no row."""
    _load(fresh_db, RAW)
    build(fresh_db, as_of=AS_OF, target_path=tmp_path)
    view, table = "int_services_catalog", "contact_health"
    test = ["test", "--select", f"{view} {table},test_name:checks"]
    run_dbt(fresh_db, test, as_of=AS_OF, target_path=tmp_path)
    ran = {p.name: p.read_text() for p in (tmp_path / "run").rglob("checks_*.sql")}
    scanned, health = ran[f"checks_{view}.sql"], ran[f"checks_{table}.sql"]
    assert "count(*) filter (where service is null)" in scanned
    assert "service is null" not in health and "contact_kind is null" not in health
    assert "cast(status as text) not in ('alive', 'unconfirmed', 'dead')" in health
    with psycopg.connect(fresh_db) as conn:
        rows = conn.execute(f"select count(*) from analytics.{view}").fetchone()[0]
        # the view as built, with service emptied on one row, category on every row and
        # catalog_source made a value not accepted on two rows
        conn.execute(f"alter view analytics.{view} rename to {view}_built")
        columns = [c for (c,) in conn.execute(
            "select attname from pg_attribute where attrelid = %s::regclass and attnum > 0 "
            "order by attnum", (f"analytics.{view}_built",))]
        exprs = {"service": "case when row_number() over () = 1 then null else service end",
                 "category": "case when false then category end",
                 "catalog_source": "case when row_number() over () <= 2 then 'csv' "
                                   "else catalog_source end"}
        conn.execute(f"create view analytics.{view} as select "
                     + ", ".join(f"{exprs.get(c, c)} as {c}" for c in columns)
                     + f" from analytics.{view}_built")

    with pytest.raises(DbtError) as failed:
        run_dbt(fresh_db, ["test", "--select", f"{view},test_name:checks",
                           "--store-failures"], as_of=AS_OF, target_path=tmp_path)

    assert f"Failure in test checks_{view}" in str(failed.value)
    assert "Got 3 results" in str(failed.value)
    with psycopg.connect(fresh_db) as conn:
        failures = conn.execute(
            f"select * from analytics_dbt_test__audit.checks_{view} order by 1").fetchall()
    assert rows > 2
    # category's nulls are not also counted against its accepted values
    assert failures == [("accepted_values catalog_source", 2), ("not_null category", rows),
                        ("not_null service", 1)]


def test_checks_say_what_is_wrong_with_their_arguments(fresh_db: str, tmp_path: Path) -> None:
    """A checks test given a column name where a list is wanted fails to compile, naming the
    model and the argument and what would be valid; nothing is built."""
    settings = Settings()
    project = tmp_path / "project"
    shutil.copytree(settings.dbt_project_dir, project / "dbt_project",
                    ignore=shutil.ignore_patterns("target", "logs"))
    yml = project / "dbt_project/models/intermediate/_intermediate__models.yml"
    text = yml.read_text()
    assert "not_null: [service, category]" in text
    yml.write_text(text.replace("not_null: [service, category]", "not_null: service", 1))

    with pytest.raises(DbtError) as failed:
        run_dbt(fresh_db, ["test", "--select", "int_services_catalog,test_name:checks"],
                as_of=AS_OF, target_path=tmp_path / "target",
                settings=Settings(project_dir=project, rules_file=settings.rules_path))

    assert "`not_null` must be a list of column names, got service" in str(failed.value)
    assert "int_services_catalog" in str(failed.value)


def test_a_null_in_a_tables_not_null_column_fails_its_build_and_keeps_the_table(
    fresh_db: str, tmp_path: Path
) -> None:
    """The project's post-hook declares a table's not-null columns NOT NULL: an incremental
    table refuses a null row on the next build with PostgreSQL's message naming the column,
    and keeps the rows it had (the build's transaction is rolled back)."""
    _load(fresh_db, RAW)
    build(fresh_db, as_of=AS_OF, target_path=tmp_path)
    with psycopg.connect(fresh_db) as conn:
        before = conn.execute("select count(*), max(derived_as_of) "
                              "from analytics.int_memberships_enriched").fetchone()
        nullable = conn.execute(
            "select count(*) from pg_attribute where attrelid = "
            "'analytics.int_memberships_enriched'::regclass and attname = 'is_active_on_as_of' "
            "and not attnotnull").fetchone()[0]
        # a membership without a status, covering the next day built: whether it is active
        # on that day (is_active_on_as_of) cannot be told
        conn.execute("alter table raw.memberships alter column status drop not null")
        conn.execute(
            "insert into raw.memberships (membership_id, customer_id, product, purchased_on, "
            "starts_on, ends_on, price, status) select 'odd-1', customer_id, 'month', "
            "'2024-07-01', '2024-07-01', '2024-07-31', 100, null from raw.customers limit 1")

    with pytest.raises(DbtError) as failed:
        build(fresh_db, as_of=date(2024, 7, 15), select="int_memberships_enriched",
              target_path=tmp_path, unit_tests=False)

    assert nullable == 0
    assert 'column "is_active_on_as_of"' in str(failed.value), str(failed.value)[-2000:]
    with psycopg.connect(fresh_db) as conn:
        after = conn.execute("select count(*), max(derived_as_of) "
                             "from analytics.int_memberships_enriched").fetchone()
    assert after == before


def test_not_null_columns_are_declared_by_the_models_and_a_null_fails_the_build_naming_it(
    fresh_db: str, tmp_path: Path
) -> None:
    # the columns each table's checks test lists under not_null are declared NOT NULL by the
    # project's post-hook (set_not_null_columns), and the tests check the catalog
    _load(fresh_db, RAW)
    path = "+customer_lifecycle_history"
    result = build(fresh_db, AS_OF, path, target_path=tmp_path, unit_tests=False)
    assert "PASS checks_customer_lifecycle_stage" in result.stdout
    with psycopg.connect(fresh_db) as conn:
        not_null = dict(conn.execute(
            """
            select c.relname, array_agg(a.attname::text order by a.attname::text)
            from pg_attribute as a
            inner join pg_class as c on a.attrelid = c.oid
            where c.relnamespace = 'analytics'::regnamespace and a.attnotnull and a.attnum > 0
              and c.relname in ('customer_phase_eligibility', 'customer_lifecycle_stage',
                                'customer_lifecycle_history')
            group by c.relname
            """
        ).fetchall())
    assert not_null == {
        "customer_phase_eligibility": ["as_of_date", "customer_id", "phase", "priority", "step"],
        "customer_lifecycle_stage": [
            "as_of_date", "customer_id", "eligible_phases", "exponea_stage", "stage",
        ],
        "customer_lifecycle_history": [
            "customer_id", "days", "eligible_phases", "exponea_stage", "stage", "valid_from",
            "valid_to",
        ],
    }

    # a null reaching a table (here from a broken upstream table) fails the model's build,
    # naming the column, and the table built before stays as it was
    with psycopg.connect(fresh_db) as conn:
        conn.execute(
            "alter table analytics.customer_facts alter column as_of_date drop not null;"
            "update analytics.customer_facts set as_of_date = null where customer_id = 'nat'"
        )
    with pytest.raises(DbtError) as failed:
        build(fresh_db, AS_OF, "customer_lifecycle_stage", target_path=tmp_path, unit_tests=False)
    assert (
        'column "as_of_date" of relation "customer_lifecycle_stage" contains null values'
        in failed.value.output
    )
    with psycopg.connect(fresh_db) as conn:
        kept = conn.execute(
            "select count(*), count(as_of_date) from analytics.customer_lifecycle_stage"
        ).fetchone()
    assert kept == (4, 4)  # nat, bad, intl, zeros: 'late' joins after AS_OF

    # the incremental history keeps its NOT NULL columns: a null stage is refused on write
    next_day = AS_OF + timedelta(days=1)
    with psycopg.connect(fresh_db) as conn:
        conn.execute(
            "alter table analytics.customer_lifecycle_stage alter column stage drop not null"
        )
        conn.execute(
            "update analytics.customer_lifecycle_stage set as_of_date = %s, "
            "stage = case when customer_id = 'nat' then null else stage end",
            (next_day,),
        )
    with pytest.raises(DbtError) as failed:
        build(fresh_db, next_day, "customer_lifecycle_history", target_path=tmp_path,
              unit_tests=False)
    assert 'null value in column "stage" of relation' in failed.value.output
    with psycopg.connect(fresh_db) as conn:
        last_day = conn.execute(
            "select max(valid_to) from analytics.customer_lifecycle_history"
        ).fetchone()[0]
    assert last_day == AS_OF


@pytest.mark.parametrize(
    ("extra_args", "message"),
    [
        ([], "var 'as_of_date' is required to build customer_facts"),
        (["--vars", '{"as_of_date": "2024-02-30"}'], "var 'as_of_date' is not a calendar date"),
    ],
)
def test_the_mart_does_not_compile_without_a_valid_as_of_date(
    fresh_db: str, tmp_path: Path, extra_args: list[str], message: str
) -> None:
    with pytest.raises(DbtError) as failed:
        run_dbt(fresh_db, ["run", "--select", "customer_facts", *extra_args], target_path=tmp_path)

    assert message in str(failed.value)


def test_club_timezone_follows_the_package_setting(fresh_db: str, tmp_path: Path) -> None:
    settings = Settings(club_timezone="Europe/Warsaw")

    run_dbt(
        fresh_db,
        ["compile", "--select", "stg_club__customers"],
        settings=settings,
        target_path=tmp_path,
    )

    compiled = next(tmp_path.rglob("compiled/**/stg_club__customers.sql")).read_text()
    assert "coalesce(time_zones.name, 'Europe/Warsaw') as timezone" in compiled


def _snapshot(url: str) -> tuple[list, list]:
    """int_visits_daily and customer_facts, every row, in a stable order."""
    with psycopg.connect(url) as conn:
        days = conn.execute(
            "select customer_id, visit_date, visits_count, visits_cumulative "
            "from analytics.int_visits_daily order by customer_id, visit_date"
        ).fetchall()
        facts = conn.execute(
            "select * from analytics.customer_facts order by customer_id"
        ).fetchall()
    return days, facts


def test_incremental_visits_equal_a_full_rebuild_and_past_days_rebuild_the_same(
    fresh_db: str, tmp_path: Path
) -> None:
    day = date(2025, 6, 30)
    next_day = day + timedelta(days=1)
    generate(1_500, date(2025, 1, 1), day, seed=7, url=fresh_db)
    # cautious: not the tests of later models that merely reference these
    args = ["build", "--select", "+customer_service_purchases", "+customer_facts"]
    args += ["--indirect-selection", "cautious", "--exclude", "resource_type:unit_test"]
    run_dbt(fresh_db, args, as_of=day, target_path=tmp_path)
    _, facts_on_day = _snapshot(fresh_db)

    # Visits after D (copies of D's UTC day two days later, under new ids: local dates D+1 to
    # D+3 in every zone), then D rebuilt: later rows are in int_visits_daily now, but nothing
    # dated after D counts.
    with psycopg.connect(fresh_db) as conn:
        conn.execute("set timezone = 'UTC'")
        new = conn.execute(
            """
            insert into raw.visits (visit_id, customer_id, visited_at)
            select visit_id || '-next', customer_id, visited_at + interval '2 days'
            from raw.visits
            where visited_at >= %(day)s::timestamptz and visited_at < %(next)s::timestamptz
            """,
            {"day": day, "next": next_day},
        ).rowcount
    assert new > 10
    run_dbt(fresh_db, args, as_of=next_day, target_path=tmp_path)
    run_dbt(fresh_db, args, as_of=day, target_path=tmp_path)
    assert _snapshot(fresh_db)[1] == facts_on_day

    # A late load: visits dated three days before D, and a correction moving visits of ten days
    # ago five days later (same ids, new time). The incremental run equals a full rebuild.
    with psycopg.connect(fresh_db) as conn:
        late = conn.execute(
            """
            insert into raw.visits (visit_id, customer_id, visited_at)
            select visit_id || '-late', customer_id, visited_at - interval '5 days'
            from raw.visits where visit_id like '%-next' and abs(hashtext(visit_id)) % 3 = 0
            """
        ).rowcount
        moved = conn.execute(
            """
            update raw.visits set visited_at = visited_at + interval '5 days', _loaded_at = now()
            where visit_id in (
                select visit_id from raw.visits
                where visited_at >= %(from)s and visited_at < %(to)s
                order by visit_id limit 5)
            """,
            {"from": day - timedelta(days=10), "to": day - timedelta(days=9)},
        ).rowcount
        # stg_club__customers is incremental too: a reloaded customer (new email and phone)
        # and a new one must come out as a full rebuild cleans them
        changed = conn.execute(
            """
            update raw.customers
            set email = ' Changed.' || customer_id || '@Example.ORG ', phone = '0501234567',
                _loaded_at = now()
            where customer_id = (select min(customer_id) from raw.customers)
            returning customer_id
            """
        ).fetchone()[0]
        conn.execute(
            "insert into raw.customers (customer_id, first_name, email, phone, created_at) "
            "values ('newcomer', 'Nova', 'nova@example.com', '+380671112233', %(at)s)",
            {"at": day},
        )
    assert late > 0 and moved == 5
    run_dbt(fresh_db, args, as_of=next_day, target_path=tmp_path)
    incremental = _snapshot(fresh_db)
    facts = {row[0]: row for row in incremental[1]}
    assert facts[changed][3] == f"changed.{changed.lower()}@example.org"
    assert facts[changed][4] == "+380501234567"
    assert "newcomer" in facts
    with psycopg.connect(fresh_db) as conn:
        counted, loaded = conn.execute(
            "select (select sum(visits_count) from analytics.int_visits_daily), "
            "(select count(*) from raw.visits)"
        ).fetchone()
    assert counted == loaded  # every visit, the late and the moved ones too, counted once
    run_dbt(fresh_db, [*args, "--full-refresh"], as_of=next_day, target_path=tmp_path)
    assert _snapshot(fresh_db) == incremental


def _retention(url: str) -> list[tuple]:
    """metrics_retention_monthly, every row, in a stable order."""
    with psycopg.connect(url) as conn:
        return conn.execute(
            "select * from analytics.metrics_retention_monthly order by month, club_id"
        ).fetchall()


def test_retention_metrics_built_day_by_day_equal_a_full_refresh(
    fresh_db: str, tmp_path: Path
) -> None:
    # 05-30 stores May incomplete, 05-31 recounts and completes it, 06-01 keeps May's member
    # counts and counts June; then a rebuild of 05-31 drops June and keeps May again.
    generate(1_500, date(2025, 1, 1), date(2025, 6, 30), seed=7, url=fresh_db)
    # the models and the seed they read; tests elsewhere cover the data tests
    args = ["build", "--select", "+metrics_retention_monthly"]
    args += ["--exclude", "resource_type:unit_test", "resource_type:test"]
    may_30, may_31, june_1 = date(2025, 5, 30), date(2025, 5, 31), date(2025, 6, 1)
    run_dbt(fresh_db, [*args, "--full-refresh"], as_of=may_30, target_path=tmp_path)
    assert not [row for row in _retention(fresh_db) if row[0] == date(2025, 5, 1)][0][3]
    run_dbt(fresh_db, args, as_of=may_31, target_path=tmp_path)
    run_dbt(fresh_db, args, as_of=june_1, target_path=tmp_path)
    incremental = _retention(fresh_db)
    run_dbt(fresh_db, [*args, "--full-refresh"], as_of=june_1, target_path=tmp_path)
    full = _retention(fresh_db)
    assert incremental == full
    may = [row for row in full if row[0] == date(2025, 5, 1)]
    assert may and all(row[3] for row in may)  # is_complete
    assert sum(row[4] for row in may) > 100  # customers_start: members were counted
    assert max(row[0] for row in full) == date(2025, 6, 1)

    # Back to 05-31 incrementally: June disappears.
    run_dbt(fresh_db, args, as_of=may_31, target_path=tmp_path)
    rewound = _retention(fresh_db)
    assert max(row[0] for row in rewound) == date(2025, 5, 1)
    run_dbt(fresh_db, [*args, "--full-refresh"], as_of=may_31, target_path=tmp_path)
    assert _retention(fresh_db) == rewound


def test_every_rfm_segment_and_exponea_stage_exists_in_the_demo_club(
    fresh_db: str, tmp_path: Path
) -> None:
    # make demo's club (lifecycle demo's defaults): the data tests enabled by the var
    # demo_club fail the build unless each of the 14 segments and 5 stages has customers
    demo_end = date(2026, 6, 30)
    generate(10_000, date(2025, 1, 1), demo_end, seed=42, url=fresh_db)
    build(fresh_db, demo_end, "+customer_lifecycle_history", target_path=tmp_path,
          unit_tests=False, dbt_vars={"demo_club": "true"})
    with psycopg.connect(fresh_db) as conn:
        segments = dict(conn.execute(
            "select rfm_segment, count(*) from analytics.customer_facts group by 1"
        ).fetchall())
        stages = dict(conn.execute(
            "select exponea_stage, count(*) from analytics.customer_lifecycle_stage group by 1"
        ).fetchall())
    assert set(segments) == {
        "champions", "loyal", "potential_loyalists", "recent", "promising", "need_attention",
        "about_to_sleep", "at_risk", "cant_lose_them", "hibernating", "lost",
        "first_time_buyer", "guest", "loyal_guest",
    }
    assert set(stages) == {"acquire", "retain", "grow_value", "cherish", "reactivate"}
    assert sum(segments.values()) == sum(stages.values())  # one of each per customer


def _memberships(url: str) -> list[tuple]:
    """int_memberships_enriched without the bookkeeping columns, in a stable order."""
    with psycopg.connect(url) as conn:
        return conn.execute(
            """
            select membership_id, customer_id, purchased_on, starts_on, ends_on, status,
                   membership_number, is_active_on_as_of, membership_status, has_renewal,
                   renewal_membership_id, gap_days_before, is_current
            from analytics.int_memberships_enriched order by membership_id
            """
        ).fetchall()


def _purchases(url: str) -> list[tuple]:
    """int_purchases_classified without the high-water mark, in a stable order."""
    with psycopg.connect(url) as conn:
        return conn.execute(
            "select purchase_id, customer_id, service, category, purchase_date, timezone, "
            "amount from analytics.int_purchases_classified order by purchase_id"
        ).fetchall()


def _sales(url: str, customer_id: str) -> tuple | None:
    """A customer's int_customer_sales row: lifetime purchases, last date, frequency, monetary."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "select lifetime_purchases, last_purchased_on, rfm_frequency, rfm_monetary "
            "from analytics.int_customer_sales where customer_id = %s",
            (customer_id,),
        ).fetchone()
    return None if row is None else (row[0], row[1], row[2], int(row[3]))


def test_incremental_memberships_and_purchases_equal_a_full_rebuild_forward_and_back(
    fresh_db: str, tmp_path: Path
) -> None:
    # The generated club holds memberships bought up to 06-30: building earlier days, the later
    # ones are unknown, and periods start and end between the days built.
    generate(1_500, date(2025, 1, 1), date(2025, 6, 30), seed=7, url=fresh_db)
    # A sale a year back, by a customer who never bought anything else: inside the 365-day
    # RFM window on 06-11, outside it from 06-12 on. Only the build of 06-15 (after 06-11)
    # can take it out of the window; the full rebuilds below compare the rest.
    with psycopg.connect(fresh_db) as conn:
        year_back = conn.execute(
            "insert into raw.purchases (purchase_id, customer_id, service, purchased_at, amount) "
            "select 'year-back', customer_id, 'massage', timestamptz '2024-06-12 12:00+00', 777 "
            "from raw.customers as c where not exists (select 1 from raw.purchases as p "
            "where p.customer_id = c.customer_id) and not exists (select 1 from "
            "raw.memberships as m where m.customer_id = c.customer_id) order by customer_id "
            "limit 1 "
            "returning customer_id"
        ).fetchone()[0]
    args = ["build", "--select", "+customer_facts", "--indirect-selection", "cautious"]
    args += ["--exclude", "resource_type:unit_test", "resource_type:test"]
    full = [*args, "--full-refresh"]
    run_dbt(fresh_db, full, as_of=date(2025, 6, 10), target_path=tmp_path)
    run_dbt(fresh_db, args, as_of=date(2025, 6, 11), target_path=tmp_path)
    assert _sales(fresh_db, year_back) == (1, date(2024, 6, 12), 1, 777)
    run_dbt(fresh_db, args, as_of=date(2025, 6, 15), target_path=tmp_path)  # four days on
    assert _sales(fresh_db, year_back) == (1, date(2024, 6, 12), 0, 0)

    # Reloads: a membership frozen, one cancelled, and a renewal bought on 06-20.
    with psycopg.connect(fresh_db) as conn:
        frozen, cancelled = (
            row[0]
            for row in conn.execute(
                "select membership_id from raw.memberships where status = 'active' "
                "and starts_on <= date '2025-06-01' and ends_on >= date '2025-07-31' "
                "order by membership_id limit 2"
            )
        )
        conn.execute(
            "update raw.memberships set status = 'frozen', _loaded_at = now() "
            "where membership_id = %s",
            (frozen,),
        )
        conn.execute(
            "update raw.memberships set status = 'cancelled', _loaded_at = now() "
            "where membership_id = %s",
            (cancelled,),
        )
        conn.execute(
            "insert into raw.memberships (membership_id, customer_id, product, purchased_on, "
            "starts_on, ends_on, price, status) select 'renewal-' || membership_id, customer_id, "
            "product, date '2025-06-20', ends_on + 1, ends_on + 30, price, 'active' "
            "from raw.memberships where membership_id = %s",
            (frozen,),
        )
        # purchases: one reloaded with another amount, one new, and a customer who buys
        # services moved to another time zone (their local dates are taken again)
        conn.execute(
            "update raw.purchases set amount = amount + 1, _loaded_at = now() "
            "where purchase_id = (select min(purchase_id) from raw.purchases)"
        )
        conn.execute(
            "insert into raw.purchases (purchase_id, customer_id, service, purchased_at, amount) "
            "select 'new-' || purchase_id, customer_id, service, "
            "timestamptz '2025-06-19 22:30:00+00', amount from raw.purchases "
            "order by purchase_id desc limit 1"
        )
        moved = conn.execute(
            "update raw.customers set timezone = 'America/New_York', _loaded_at = now() "
            "where customer_id = (select customer_id from raw.purchases "
            "group by customer_id order by count(*) desc, customer_id limit 1) "
            "returning customer_id"
        ).fetchone()[0]
    day = date(2025, 6, 20)
    run_dbt(fresh_db, args, as_of=day, target_path=tmp_path)
    incremental = _memberships(fresh_db), _snapshot(fresh_db)[1], _purchases(fresh_db)
    assert {row[5] for row in incremental[2] if row[1] == moved} == {"America/New_York"}
    # only the customers with a change were derived again, and only those whose sums may
    # change summed again
    for model in ("int_memberships_enriched", "int_customer_sales"):
        with psycopg.connect(fresh_db) as conn:
            rederived, total = conn.execute(
                f"select count(*) filter (where derived_as_of = %s), count(*) "
                f"from analytics.{model}",
                (day,),
            ).fetchone()
        assert 0 < rederived < total / 4, model
    by_id = {row[0]: row for row in incremental[0]}
    assert by_id[frozen][8] == "frozen" and by_id[frozen][9]  # membership_status, has_renewal
    assert by_id[cancelled][8] == "cancelled"
    assert by_id[f"renewal-{frozen}"][8] == "upcoming"
    run_dbt(fresh_db, full, as_of=day, target_path=tmp_path)
    assert (_memberships(fresh_db), _snapshot(fresh_db)[1], _purchases(fresh_db)) == incremental

    # Back to an earlier day: everyone is derived again, the memberships bought later drop out.
    run_dbt(fresh_db, args, as_of=date(2025, 6, 5), target_path=tmp_path)
    rewound = _memberships(fresh_db), _snapshot(fresh_db)[1]
    assert max(row[2] for row in rewound[0]) <= date(2025, 6, 5)
    run_dbt(fresh_db, full, as_of=date(2025, 6, 5), target_path=tmp_path)
    assert (_memberships(fresh_db), _snapshot(fresh_db)[1]) == rewound


# Phases that stop when they should (the shipped rules file, through the real dbt): a regular
# visitor (5 visits in June) with an expired or nearly ended membership is no cross-sell
# audience; a customer whose only membership was cancelled gets no come-back offer.
PHASE_EDGES = """
insert into raw.customers (customer_id, first_name, email, phone, timezone, created_at)
select id, 'Ola', id || '@example.com', '+38067000' || n, 'Europe/Kyiv', '2023-01-01 10:00+00'
from (values ('exp', 1001), ('ten', 1002), ('reg', 1003), ('cxl', 1004), ('lap', 1005),
             ('rep', 1006)) as c (id, n);

insert into raw.memberships
  (membership_id, customer_id, product, purchased_on, starts_on, ends_on, price, status) values
  -- expired 10 days before D, still visiting (a day pass?)
  ('exp-1', 'exp', 'year', '2023-06-21', '2023-06-21', '2024-06-20', 9000, 'active'),
  -- running, 10 days before its end
  ('ten-1', 'ten', 'year', '2023-07-11', '2023-07-11', '2024-07-10', 9000, 'active'),
  -- running, 100 days before its end: the cross-sell audience
  ('reg-1', 'reg', 'year', '2023-10-09', '2023-10-09', '2024-10-08', 9000, 'active'),
  -- the only membership, cancelled; it "ended" 60 days before D
  ('cxl-1', 'cxl', 'quarter', '2024-02-01', '2024-02-01', '2024-05-01', 2400, 'cancelled'),
  -- ran to its end 60 days before D: return step 2
  ('lap-1', 'lap', 'quarter', '2024-02-01', '2024-02-01', '2024-05-01', 2400, 'active'),
  -- ended 182 days before D: step 3 repeated for the third time (step 6, days 180-209)
  ('rep-1', 'rep', 'quarter', '2023-10-01', '2023-10-01', '2023-12-31', 2400, 'active');

insert into raw.visits (visit_id, customer_id, visited_at)
select c || '-v' || d, c, timestamptz '2024-06-05 09:00+00' + d * interval '5 days'
from unnest(array['exp', 'ten', 'reg']) as c, generate_series(0, 4) as d;
"""


def test_phases_stop_when_they_should_in_dbt(fresh_db: str, tmp_path: Path) -> None:
    _load(fresh_db, PHASE_EDGES)

    build(fresh_db, as_of=AS_OF, target_path=tmp_path)

    with psycopg.connect(fresh_db) as conn:
        eligible = set(
            conn.execute(
                "select customer_id, phase, step from analytics.customer_phase_eligibility"
            ).fetchall()
        )
    facts = _facts(fresh_db)
    assert facts["exp"]["visits_last_30d"] == 5 and facts["exp"]["membership_status"] == "expired"
    assert facts["ten"]["days_until_end"] == 10 and facts["ten"]["visits_last_30d"] == 5
    assert facts["cxl"]["membership_status"] == "cancelled" and facts["cxl"]["days_since_end"] == 60
    assert facts["rep"]["days_since_end"] == 182
    assert ("reg", "cross_sell", 1) in eligible
    assert not {(c, p, s) for c, p, s in eligible if c in ("exp", "ten") and p == "cross_sell"}
    assert ("lap", "return", 2) in eligible
    assert not {(c, p, s) for c, p, s in eligible if c == "cxl"}
    # 182 days after the end: step 3's window [90, 119] moved 3 x 30 days on, step 6
    assert ("rep", "return", 6) in eligible
