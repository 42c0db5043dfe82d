"""load_dir against a real PostgreSQL: what loads, what is rejected, and that a rejected load
leaves the warehouse exactly as it was."""

from __future__ import annotations

import csv
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lifecycle.data.contract import CONTRACT
from lifecycle.data.generator import generate
from lifecycle.data.loader import LoadError, load_dir
from lifecycle.data.values import check_decimal, check_timestamp

Rows = list[list[str]]


def good_set() -> dict[str, Rows]:
    """A small valid load: three customers with imperfect contacts, every optional file."""
    return {
        "customers.csv": [
            ["customer_id", "first_name", "email", "phone", "timezone", "created_at"],
            ["C1", "Олена", "olena@example.com", "+380671234567", "Europe/Kyiv",
             "2025-01-05T10:00:00+02:00"],
            ["C2", "Piotr", "PIOTR@Example.com", "12345", "", "2025-01-06"],
            ["C3", "", "not-an-email", "0671234567", "America/New_York",
             "2025-01-07T09:00:00-05:00"],
        ],
        "memberships.csv": [
            ["membership_id", "customer_id", "product", "purchased_on", "starts_on", "ends_on",
             "price", "status"],
            ["M1", "C1", "gym_12m", "2025-01-10", "2025-01-10", "2026-01-09", "14400", "active"],
            ["M2", "C2", "gym_1m", "2025-01-11", "2025-01-11", "2025-02-10", "1800.50", "frozen"],
            ["M3", "C3", "gym_3m", "2025-01-12", "2025-01-12", "2025-04-11", "4800",
             "cancelled"],
        ],
        "visits.csv": [
            ["visit_id", "customer_id", "visited_at"],
            ["V1", "C1", "2025-01-11T08:00:00+02:00"],
            ["V2", "C1", "2025-01-12T18:30:00+02:00"],
            ["V3", "C2", "2025-01-12 07:15:00Z"],
            ["V4", "C3", "2025-01-13T07:00-05:00"],
        ],
        "purchases.csv": [
            ["purchase_id", "customer_id", "service", "purchased_at", "amount"],
            ["P1", "C1", "solarium", "2025-01-12T18:45:00+02:00", "150"],
            ["P2", "C3", "massage", "2025-02-01T12:00:00-05:00", "1200.00"],
        ],
        "consents.csv": [
            ["customer_id", "channel", "opted_in", "updated_at"],
            ["C1", "sms", "true", "2025-01-05T10:00:00+02:00"],
            ["C1", "email", "false", "2025-02-01T10:00:00+02:00"],
            ["C2", "sms", "true", "2025-01-06T10:00:00+01:00"],
        ],
        "services.csv": [
            ["service", "category"],
            ["solarium", "addon"],
            ["massage", "cross_sell"],
        ],
    }


def write_set(path: Path, files: dict[str, Rows]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for name, rows in files.items():
        with (path / name).open("w", encoding="utf-8", newline="") as f:
            csv.writer(f, lineterminator="\n").writerows(rows)
    return path


def set_cell(files: dict[str, Rows], name: str, row: int, column: str, value: str) -> None:
    """Change one value; ``row`` counts data rows from 1, so it sits on CSV line row + 1."""
    header = files[name][0]
    files[name][row][header.index(column)] = value


def rename_column(files: dict[str, Rows], name: str, old: str, new: str) -> None:
    header = files[name][0]
    header[header.index(old)] = new


def add_column(files: dict[str, Rows], name: str, column: str, value: str) -> None:
    files[name][0].append(column)
    for row in files[name][1:]:
        row.append(value)


def drop_column(files: dict[str, Rows], name: str, column: str) -> None:
    i = files[name][0].index(column)
    for row in files[name]:
        del row[i]


TABLES = [spec.table for spec in CONTRACT]


def snapshot(url: str) -> dict[str, object]:
    """Row counts of every raw table plus the values a bad load would touch first."""
    with psycopg.connect(url) as conn:
        state: dict[str, object] = {
            t: conn.execute(f"select count(*) from {t}").fetchone()[0] for t in TABLES
        }
        state["customers"] = conn.execute(
            "select customer_id, email, club_id, created_at from raw.customers order by 1"
        ).fetchall()
        state["prices"] = conn.execute(
            "select membership_id, price from raw.memberships order by 1"
        ).fetchall()
    return state


@pytest.fixture
def loaded(fresh_db: str, tmp_path: Path) -> str:
    """A warehouse holding the good set."""
    load_dir(fresh_db, write_set(tmp_path / "good", good_set()))
    return fresh_db


def reject(url: str, path: Path, **kw) -> LoadError:
    with pytest.raises(LoadError) as info:
        load_dir(url, path, **kw)
    return info.value


# -- what loads ---------------------------------------------------------------------------


def test_good_set_loads_every_file_with_contacts_as_given(fresh_db: str, tmp_path: Path) -> None:
    report = load_dir(fresh_db, write_set(tmp_path, good_set()), club_timezone="Europe/Kyiv")
    assert report.rows == {
        "customers.csv": 3, "memberships.csv": 3, "visits.csv": 4, "purchases.csv": 2,
        "consents.csv": 3, "services.csv": 2,
    }
    assert all(f.inserted == f.rows and f.updated == 0 for f in report.files.values())
    with psycopg.connect(fresh_db) as conn:
        conn.execute("set timezone = 'UTC'")
        rows = conn.execute(
            "select customer_id, first_name, email, phone, timezone, club_id, created_at "
            "from raw.customers order by 1"
        ).fetchall()
        assert [r[:6] for r in rows] == [
            ("C1", "Олена", "olena@example.com", "+380671234567", "Europe/Kyiv", "main"),
            ("C2", "Piotr", "PIOTR@Example.com", "12345", None, "main"),
            ("C3", None, "not-an-email", "0671234567", "America/New_York", "main"),
        ]
        # A date-only created_at is midnight in the club's zone (Europe/Kyiv: UTC+2 in winter).
        assert rows[1][6].isoformat() == "2025-01-05T22:00:00+00:00"
        visits = conn.execute("select visit_id, visited_at from raw.visits order by 1").fetchall()
        assert [v.isoformat() for _, v in visits] == [
            "2025-01-11T06:00:00+00:00", "2025-01-12T16:30:00+00:00",
            "2025-01-12T07:15:00+00:00", "2025-01-13T12:00:00+00:00",
        ]
        assert conn.execute("select price from raw.memberships where membership_id = 'M2'"
                            ).fetchone() == (Decimal("1800.50"),)
        assert conn.execute("select customer_id, channel, opted_in from raw.consents order by 1, 2"
                            ).fetchall() == [("C1", "email", False), ("C1", "sms", True),
                                             ("C2", "sms", True)]


def test_optional_files_may_be_absent(fresh_db: str, tmp_path: Path) -> None:
    files = good_set()
    for name in ("purchases.csv", "consents.csv", "services.csv"):
        del files[name]
    report = load_dir(fresh_db, write_set(tmp_path, files))
    assert set(report.rows) == {"customers.csv", "memberships.csv", "visits.csv"}
    state = snapshot(fresh_db)
    assert (state["raw.visits"], state["raw.purchases"], state["raw.consents"]) == (4, 0, 0)


def test_reload_upserts_changed_values_without_new_rows(loaded: str, tmp_path: Path) -> None:
    before = snapshot(loaded)
    files = good_set()
    set_cell(files, "customers.csv", 1, "email", "olena.new@example.com")
    set_cell(files, "memberships.csv", 2, "price", "1700")
    report = load_dir(loaded, write_set(tmp_path / "again", files))
    assert report.files["customers.csv"].inserted == 0
    assert report.files["customers.csv"].updated == 3
    after = snapshot(loaded)
    assert {t: after[t] for t in TABLES} == {t: before[t] for t in TABLES}
    with psycopg.connect(loaded) as conn:
        assert conn.execute("select email from raw.customers where customer_id = 'C1'"
                            ).fetchone() == ("olena.new@example.com",)
        assert conn.execute("select price from raw.memberships where membership_id = 'M2'"
                            ).fetchone() == (Decimal("1700.00"),)


def test_reload_adds_new_ids_and_counts_them_as_inserted(loaded: str, tmp_path: Path) -> None:
    files = good_set()
    files["visits.csv"].append(["V5", "C2", "2025-01-20T19:00:00+02:00"])
    report = load_dir(loaded, write_set(tmp_path / "more", files))
    assert (report.files["visits.csv"].inserted, report.files["visits.csv"].updated) == (1, 4)
    assert snapshot(loaded)["raw.visits"] == 5


def test_references_to_customers_already_in_the_warehouse_are_fine(
    loaded: str, tmp_path: Path
) -> None:
    files = {
        "customers.csv": good_set()["customers.csv"][:2],  # C1 only
        "memberships.csv": good_set()["memberships.csv"][:1],
        "visits.csv": [["visit_id", "customer_id", "visited_at"],
                       ["V9", "C3", "2025-03-01T10:00:00-05:00"]],  # C3 loaded before
    }
    report = load_dir(loaded, write_set(tmp_path / "delta", files))
    assert report.rows["visits.csv"] == 1
    assert snapshot(loaded)["raw.visits"] == 5


def test_club_id_column_is_optional_and_kept_when_absent_later(
    fresh_db: str, tmp_path: Path
) -> None:
    files = good_set()
    files["customers.csv"][0].append("club_id")
    for row, club in zip(files["customers.csv"][1:], ["north", "", "south"], strict=True):
        row.append(club)
    load_dir(fresh_db, write_set(tmp_path / "a", files))
    clubs = [(c, club) for c, _, club, _ in snapshot(fresh_db)["customers"]]
    assert clubs == [("C1", "north"), ("C2", "main"), ("C3", "south")]
    # A later file without the column does not reset what is stored.
    load_dir(fresh_db, write_set(tmp_path / "b", good_set()))
    assert [club for _, _, club, _ in snapshot(fresh_db)["customers"]] == ["north", "main", "south"]


def test_contact_updated_at_is_optional_and_a_bad_one_is_located(
    fresh_db: str, tmp_path: Path
) -> None:
    files = good_set()
    files["customers.csv"][0].append("contact_updated_at")
    for row, when in zip(files["customers.csv"][1:],
                         ["2025-04-01", "", "2025-04-02T09:30:00+03:00"], strict=True):
        row.append(when)
    load_dir(fresh_db, write_set(tmp_path / "a", files))
    with psycopg.connect(fresh_db) as conn:
        rows = conn.execute("select customer_id, contact_updated_at at time zone 'UTC' "
                            "from raw.customers order by 1").fetchall()
    # a date alone is read in the club's time zone (Europe/Kyiv: UTC+3 in April)
    assert [(c, str(t)) for c, t in rows] == [
        ("C1", "2025-03-31 21:00:00"), ("C2", "None"), ("C3", "2025-04-02 06:30:00")]
    # a file without the column keeps what is stored; a bad value rejects the whole load
    load_dir(fresh_db, write_set(tmp_path / "b", good_set()))
    files["customers.csv"][2][-1] = "2025-13-01"
    err = reject(fresh_db, write_set(tmp_path / "c", files))
    assert [(e.file, e.line, e.column) for e in err.errors] == [
        ("customers.csv", 3, "contact_updated_at")]
    with psycopg.connect(fresh_db) as conn:
        assert conn.execute("select count(contact_updated_at) from raw.customers"
                            ).fetchone()[0] == 2


def test_quoted_values_bom_blank_lines_and_line_numbers(fresh_db: str, tmp_path: Path) -> None:
    write_set(tmp_path, good_set())
    customers = (
        "\ufeffcustomer_id,first_name,email,phone,timezone,created_at\n"
        'C1,"Anna\nMaria","a,b@example.com",+380671234567,Europe/Kyiv,2025-01-05\n'
        '\n'
        'C2,"Say ""hi""",,,,2025-01-06\n'
        "C3,Ok,,,,2025-02-30\n"
    )
    (tmp_path / "customers.csv").write_text(customers, encoding="utf-8")
    err = reject(fresh_db, tmp_path)
    # Line 2-3 is one record, line 4 is blank: the bad date is on physical line 6.
    assert [(e.file, e.line, e.column, e.value) for e in err.errors] == [
        ("customers.csv", 6, "created_at", "2025-02-30")
    ]
    (tmp_path / "customers.csv").write_text(customers.replace("2025-02-30", "2025-02-28"),
                                            encoding="utf-8")
    load_dir(fresh_db, tmp_path)
    with psycopg.connect(fresh_db) as conn:
        rows = conn.execute(
            "select first_name, email from raw.customers order by customer_id"
        ).fetchall()
    assert rows == [("Anna\nMaria", "a,b@example.com"), ('Say "hi"', None), ("Ok", None)]


def test_generated_data_loads(fresh_db: str, tmp_path: Path) -> None:
    gen = generate(500, date(2025, 1, 1), date(2025, 12, 31), 7, out_dir=tmp_path)
    report = load_dir(fresh_db, tmp_path)
    assert report.rows == gen.rows
    state = snapshot(fresh_db)
    assert state["raw.visits"] == gen.rows["visits.csv"] > 0


def test_a_misnamed_required_file_is_named_in_the_error(loaded: str, tmp_path: Path) -> None:
    before = snapshot(loaded)
    write_set(tmp_path, good_set())
    (tmp_path / "visits.csv").rename(tmp_path / "Visits.CSV")
    err = reject(loaded, tmp_path)
    assert [(e.file, e.line) for e in err.errors] == [("visits.csv", None)]
    assert "required file missing" in err.errors[0].reason
    assert "found Visits.CSV: rename it to visits.csv" in err.errors[0].reason
    assert snapshot(loaded) == before


def test_unknown_csv_files_are_reported_not_loaded(fresh_db: str, tmp_path: Path) -> None:
    write_set(tmp_path, good_set())
    (tmp_path / "visit.csv").write_text("visit_id\n")
    report = load_dir(fresh_db, tmp_path)
    assert report.ignored == ["visit.csv"]
    assert "visit.csv" in str(report)


# -- what is rejected, one kind at a time ------------------------------------------------

# (name, change the good set, expected (file, line, column, words in the reason))
CASES = [
    ("missing required column",
     lambda f: drop_column(f, "customers.csv", "created_at"),
     ("customers.csv", 1, "created_at", "required column missing")),
    ("unknown column",
     lambda f: add_column(f, "visits.csv", "room", "gym"),
     ("visits.csv", 1, "room", "unknown column")),
    ("unparsable date",
     lambda f: set_cell(f, "memberships.csv", 2, "purchased_on", "11.01.2025"),
     ("memberships.csv", 3, "purchased_on", "not a date; expected a date like 2024-03-01")),
    ("impossible date",
     lambda f: set_cell(f, "memberships.csv", 1, "ends_on", "2026-02-30"),
     ("memberships.csv", 2, "ends_on", "not a valid calendar date")),
    ("unparsable number",
     lambda f: set_cell(f, "memberships.csv", 1, "price", "14 400"),
     ("memberships.csv", 2, "price", "not a number; expected a number >= 0")),
    ("too many decimals",
     lambda f: set_cell(f, "purchases.csv", 1, "amount", "150.005"),
     ("purchases.csv", 2, "amount", "more than 2 decimals")),
    ("unparsable timestamp",
     lambda f: set_cell(f, "visits.csv", 3, "visited_at", "yesterday"),
     ("visits.csv", 4, "visited_at", "not a timestamp; expected a timestamp with its UTC offset")),
    ("timestamp without offset",
     lambda f: set_cell(f, "visits.csv", 1, "visited_at", "2025-01-11T08:00:00"),
     ("visits.csv", 2, "visited_at", "has no UTC offset")),
    ("date where a timestamp is due",
     lambda f: set_cell(f, "consents.csv", 2, "updated_at", "2025-02-01"),
     ("consents.csv", 3, "updated_at", "has no UTC offset")),
    ("unknown enum value",
     lambda f: set_cell(f, "memberships.csv", 3, "status", "paused"),
     ("memberships.csv", 4, "status", "expected one of active, frozen, cancelled")),
    ("unknown channel",
     lambda f: set_cell(f, "consents.csv", 1, "channel", "push"),
     ("consents.csv", 2, "channel", "expected one of sms, email")),
    ("boolean spelled otherwise",
     lambda f: set_cell(f, "consents.csv", 1, "opted_in", "yes"),
     ("consents.csv", 2, "opted_in", "expected true or false")),
    ("invalid time zone",
     lambda f: set_cell(f, "customers.csv", 1, "timezone", "Europe/Kiyv"),
     ("customers.csv", 2, "timezone", "not an IANA time zone name")),
    ("empty value",
     lambda f: set_cell(f, "visits.csv", 2, "customer_id", ""),
     ("visits.csv", 3, "customer_id", "empty; expected")),
    ("empty created_at",
     lambda f: set_cell(f, "customers.csv", 3, "created_at", ""),
     ("customers.csv", 4, "created_at", "empty; expected")),
    ("duplicate id",
     lambda f: set_cell(f, "visits.csv", 3, "visit_id", "V1"),
     ("visits.csv", 4, "visit_id", "duplicate: the same visit_id is on line 2")),
    ("duplicate customer",
     lambda f: f["customers.csv"].append(list(f["customers.csv"][2])),
     ("customers.csv", 5, "customer_id", "duplicate: the same customer_id is on line 3")),
    ("duplicate consent",
     lambda f: set_cell(f, "consents.csv", 2, "channel", "sms"),
     ("consents.csv", 3, "customer_id, channel", "on line 2")),
    ("ends before it starts",
     lambda f: set_cell(f, "memberships.csv", 1, "ends_on", "2025-01-09"),
     ("memberships.csv", 2, "ends_on", "before starts_on (2025-01-10)")),
    ("negative price",
     lambda f: set_cell(f, "memberships.csv", 1, "price", "-14400"),
     ("memberships.csv", 2, "price", "negative; expected a number >= 0")),
    ("negative amount",
     lambda f: set_cell(f, "purchases.csv", 2, "amount", "-1.5"),
     ("purchases.csv", 3, "amount", "negative")),
    ("membership of unknown customer",
     lambda f: set_cell(f, "memberships.csv", 2, "customer_id", "C404"),
     ("memberships.csv", 3, "customer_id", "unknown customer")),
    ("visit of unknown customer",
     lambda f: set_cell(f, "visits.csv", 4, "customer_id", "C404"),
     ("visits.csv", 5, "customer_id", "unknown customer")),
    ("purchase of unknown customer",
     lambda f: set_cell(f, "purchases.csv", 1, "customer_id", "c1"),
     ("purchases.csv", 2, "customer_id", "unknown customer")),
    ("consent of unknown customer",
     lambda f: set_cell(f, "consents.csv", 3, "customer_id", "C9"),
     ("consents.csv", 4, "customer_id", "unknown customer")),
    ("missing required file",
     lambda f: f.pop("visits.csv"),
     ("visits.csv", None, None, "required file missing")),
    ("row with too few values",
     lambda f: f["visits.csv"][2].pop(),
     ("visits.csv", 3, None, "has 2 values, the header has 3")),
    ("unknown service category",
     lambda f: set_cell(f, "services.csv", 2, "category", "upsell"),
     ("services.csv", 3, "category", "expected one of addon, cross_sell")),
    # values Python reads but PostgreSQL (or a later reader) refuses: caught with their line
    ("offset beyond PostgreSQL's range",
     lambda f: set_cell(f, "visits.csv", 1, "visited_at", "2025-01-11T08:00:00+20:00"),
     ("visits.csv", 2, "visited_at", "UTC offset +20:00 is out of range")),
    ("offset of 16 hours",
     lambda f: set_cell(f, "consents.csv", 2, "updated_at", "2025-02-01T10:00-1600"),
     ("consents.csv", 3, "updated_at", "UTC offset -1600 is out of range")),
    ("offset with 60 minutes",
     lambda f: set_cell(f, "purchases.csv", 1, "purchased_at", "2025-01-12T18:45+00:60"),
     ("purchases.csv", 2, "purchased_at", "UTC offset +00:60 is out of range")),
    ("offset beyond range where a date is allowed",
     lambda f: set_cell(f, "customers.csv", 2, "created_at", "2025-01-06T10:00:00+23:00"),
     ("customers.csv", 3, "created_at", "UTC offset +23:00 is out of range")),
    ("timestamp before year 1 in UTC",
     lambda f: set_cell(f, "visits.csv", 2, "visited_at", "0001-01-01T00:30:00+01:00"),
     ("visits.csv", 3, "visited_at", "out of range")),
    ("timestamp after year 9999 in UTC",
     lambda f: set_cell(f, "visits.csv", 2, "visited_at", "9999-12-31T23:00:00-05:00"),
     ("visits.csv", 3, "visited_at", "out of range")),
    ("date-only created_at at the edge of time",
     lambda f: set_cell(f, "customers.csv", 2, "created_at", "0001-01-01"),
     ("customers.csv", 3, "created_at", "out of range")),
    ("year 0",
     lambda f: set_cell(f, "memberships.csv", 1, "purchased_on", "0000-01-10"),
     ("memberships.csv", 2, "purchased_on", "not a valid calendar date")),
    ("year 10000",
     lambda f: set_cell(f, "memberships.csv", 1, "ends_on", "10000-01-09"),
     ("memberships.csv", 2, "ends_on", "not a date")),
    ("February 30th in a timestamp",
     lambda f: set_cell(f, "visits.csv", 1, "visited_at", "2024-02-30T08:00:00+02:00"),
     ("visits.csv", 2, "visited_at", "not a valid date and time")),
    ("price over numeric(12, 2)",
     lambda f: set_cell(f, "memberships.csv", 1, "price", "123456789012"),
     ("memberships.csv", 2, "price", "too large")),
    ("digits PostgreSQL does not read",
     lambda f: set_cell(f, "memberships.csv", 1, "price", "\u0661\u0662\u0663"),
     ("memberships.csv", 2, "price", "not a number")),
    ("full-width digits",
     lambda f: set_cell(f, "purchases.csv", 1, "amount", "\uff11\uff15\uff10"),
     ("purchases.csv", 2, "amount", "not a number")),
]


@pytest.mark.parametrize("change, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_rejects_the_whole_load(loaded: str, tmp_path: Path, change, expected) -> None:
    before = snapshot(loaded)
    files = good_set()
    # Also change values the upsert would touch first: none of it may stick.
    set_cell(files, "customers.csv", 1, "email", "changed@example.com")
    set_cell(files, "memberships.csv", 1, "price", "1")
    files["visits.csv"].append(["V-new", "C1", "2025-03-01T10:00:00+02:00"])
    change(files)
    err = reject(loaded, write_set(tmp_path / "bad", files))
    assert snapshot(loaded) == before
    assert len(err.errors) == 1, str(err)
    issue = err.errors[0]
    file, line, column, reason = expected
    assert (issue.file, issue.line, issue.column) == (file, line, column), str(err)
    assert reason in issue.reason
    assert f"{file} line {line}" in str(err) if line else file in str(err)


def test_misspelt_column_is_unknown_and_its_column_missing(loaded: str, tmp_path: Path) -> None:
    before = snapshot(loaded)
    files = good_set()
    rename_column(files, "memberships.csv", "ends_on", "end_on")
    err = reject(loaded, write_set(tmp_path / "bad", files))
    assert [(e.file, e.line, e.column) for e in err.errors] == [
        ("memberships.csv", 1, "end_on"), ("memberships.csv", 1, "ends_on")
    ]
    assert "unknown column (position 6); did you mean ends_on?" in err.errors[0].reason
    assert "required column missing" in err.errors[1].reason
    assert snapshot(loaded) == before


def test_nothing_loads_into_an_empty_warehouse_either(fresh_db: str, tmp_path: Path) -> None:
    files = good_set()
    set_cell(files, "visits.csv", 4, "visited_at", "2025-13-01T10:00:00+02:00")
    err = reject(fresh_db, write_set(tmp_path, files))
    assert [(e.line, e.column) for e in err.errors] == [(5, "visited_at")]
    assert all(n == 0 for t, n in snapshot(fresh_db).items() if t in TABLES)


def test_unreadable_files_name_the_line(loaded: str, tmp_path: Path) -> None:
    before = snapshot(loaded)
    write_set(tmp_path, good_set())
    (tmp_path / "visits.csv").write_bytes(
        b"visit_id,customer_id,visited_at\nV1,C1,2025-01-11T08:00:00+02:00\n"
        b"V2,C\x001,2025-01-12T18:30:00+02:00\n"
    )
    (tmp_path / "purchases.csv").write_bytes(
        b"purchase_id,customer_id,service,purchased_at,amount\n"
        b"P1,C1,solarium,2025-01-12T18:45:00+02:00,150\n"
        b"P2,C1,sol\xe4rium,2025-01-12T18:45:00+02:00,150\n"
    )
    (tmp_path / "consents.csv").write_text(
        'customer_id,channel,opted_in,updated_at\nC1,"sms"x,true,2025-01-05T10:00:00+02:00\n'
    )
    err = reject(loaded, tmp_path)
    found = [(e.file, e.line) for e in err.errors]
    assert found == [("visits.csv", 3), ("purchases.csv", 3), ("consents.csv", 2)], str(err)
    assert "NUL" in err.errors[0].reason
    assert "UTF-8" in err.errors[1].reason
    assert "not valid CSV" in err.errors[2].reason
    assert snapshot(loaded) == before


def test_several_errors_are_reported_at_once_in_file_order(loaded: str, tmp_path: Path) -> None:
    files = good_set()
    set_cell(files, "visits.csv", 1, "customer_id", "C404")
    set_cell(files, "memberships.csv", 3, "status", "paused")
    set_cell(files, "memberships.csv", 1, "purchased_on", "2025/01/10")
    set_cell(files, "customers.csv", 2, "timezone", "Kyiv")
    set_cell(files, "visits.csv", 3, "visit_id", "V2")  # dup, found alongside the others
    err = reject(loaded, write_set(tmp_path / "bad", files))
    assert [(e.file, e.line, e.column) for e in err.errors] == [
        ("customers.csv", 3, "timezone"),
        ("memberships.csv", 2, "purchased_on"),
        ("memberships.csv", 4, "status"),
        ("visits.csv", 2, "customer_id"),
        ("visits.csv", 4, "visit_id"),
    ]
    assert err.suppressed == 0
    text = str(err)
    assert text.startswith("Load rejected, nothing was loaded: 5 problems")
    assert len(text.splitlines()) == 6


def test_error_cap_says_how_many_more(loaded: str, tmp_path: Path) -> None:
    files = good_set()
    visits = files["visits.csv"]
    for i in range(10):
        visits.append([f"X{i}", "C404", "2025-01-11T08:00:00+02:00"])
    for i in range(5):
        visits.append([f"Y{i}", "C1", "not a time"])
    err = reject(loaded, write_set(tmp_path / "bad", files), max_errors=4)
    assert len(err.errors) == 4
    assert err.suppressed == 11
    assert [e.line for e in err.errors] == [6, 7, 8, 9]
    assert "and 11 more not shown" in str(err)


def test_long_values_are_truncated_in_errors(loaded: str, tmp_path: Path) -> None:
    files = good_set()
    set_cell(files, "visits.csv", 1, "visited_at", "x" * 500)
    err = reject(loaded, write_set(tmp_path / "bad", files))
    assert err.errors[0].value is not None and len(err.errors[0].value) <= 60


def test_errors_mask_phones_and_emails(loaded: str, tmp_path: Path) -> None:
    """Every echoed row, line, value or column name has its contacts masked."""
    files = good_set()
    files["customers.csv"].append(["C4", "Ivan", "ivan.petrenko@example.com", "+380501112233"])
    files["customers.csv"].append(
        ["C5", "Ann", "+380671234500", "ann.k@example.org", "", "anna@example.net"]
    )
    set_cell(files, "visits.csv", 1, "customer_id", "olga.shevchenko@example.com")
    set_cell(files, "visits.csv", 2, "customer_id", "+380931234567")
    write_set(tmp_path, files)
    (tmp_path / "purchases.csv").write_bytes(
        b"purchase_id,customer_id,service,purchased_at,amount\n"
        b"P1,C1,x\x00 petro@example.com +380441234567,2025-01-12T18:45:00+02:00,150\n"
    )
    (tmp_path / "services.csv").write_text("olena@example.com,+380671234567\n")
    err = reject(loaded, tmp_path)
    text = str(err)
    for contact in ("ivan.petrenko@example.com", "+380501112233", "+380671234500",
                    "ann.k@example.org", "anna@example.net", "olga.shevchenko@example.com",
                    "+380931234567", "petro@example.com", "+380441234567",
                    "olena@example.com", "+380671234567"):
        assert contact not in text, contact
    found = {(e.file, e.line, e.column): e.value for e in err.errors}
    assert found[("customers.csv", 5, None)] == "C4,Ivan,i***@example.com,+380*******33"
    assert found[("customers.csv", 6, "created_at")] == "a***@example.net"
    assert found[("visits.csv", 2, "customer_id")] == "o***@example.com"
    assert found[("visits.csv", 3, "customer_id")] == "+380*******67"
    assert "p***@example.com +380*******67" in found[("purchases.csv", 2, None)]
    assert ("services.csv", 1, "o***@example.com") in found
    assert ("services.csv", 1, "+380*******67") in found
    assert (
        "customers.csv line 5, value 'C4,Ivan,i***@example.com,+380*******33': "
        "has 4 values, the header has 6"
    ) in text


def test_an_unterminated_quote_is_reported_where_it_opens(loaded: str, tmp_path: Path) -> None:
    before = snapshot(loaded)
    files = good_set()
    visits = files["visits.csv"]
    visits += [[f"V{i}", "C1", "2025-01-11T08:00:00+02:00"] for i in range(5, 40)]
    write_set(tmp_path, files)
    lines = (tmp_path / "visits.csv").read_text().splitlines(keepends=True)
    lines[5] = lines[5].replace(",C1,", ',"C1,', 1)  # line 6 opens a quote never closed
    (tmp_path / "visits.csv").write_text("".join(lines))
    # and a quote so long it hits the csv module's field limit before the end of the file
    purchases = files["purchases.csv"]
    purchases += [[f"P{i}", "C1", "solarium", "2025-01-12T18:45:00+02:00", "150"]
                  for i in range(3, 3000)]
    purchases[3][2] = '"solarium'
    with (tmp_path / "purchases.csv").open("w") as f:
        f.writelines(",".join(row) + "\n" for row in purchases)
    err = reject(loaded, tmp_path)
    found = [(e.file, e.line, e.column) for e in err.errors]
    assert found == [("visits.csv", 6, "customer_id"), ("purchases.csv", 4, "service")], str(err)
    assert "a quote opened here (character 4 of the line) is never closed" in err.errors[0].reason
    assert "runs on to the end of the file" in err.errors[0].reason
    assert "a quote opened here (character 7 of the line)" in err.errors[1].reason
    assert "runs on to a later line" in err.errors[1].reason
    assert "visits.csv line 6, column customer_id" in str(err)
    assert snapshot(loaded) == before


def test_not_a_directory(fresh_db: str, tmp_path: Path) -> None:
    err = reject(fresh_db, tmp_path / "nope")
    assert "not a directory" in err.errors[0].reason


# -- the checks agree with PostgreSQL ------------------------------------------------------


@st.composite
def timestamp_texts(draw) -> tuple[str, bool]:
    """An ISO 8601 local time in the forms files use, with or without an offset."""
    dt = draw(st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2100, 1, 1)))
    sep = draw(st.sampled_from(["T", " "]))
    seconds = draw(st.sampled_from(["", ":%S", ":%S.%f"]))
    text = dt.strftime(f"%Y-%m-%d{sep}%H:%M{seconds}")
    # Python reads offsets up to 23:59, PostgreSQL up to 15:59
    minutes = draw(st.integers(-(23 * 60 + 59), 23 * 60 + 59))
    sign = "-" if minutes < 0 else "+"
    hh, mm = divmod(abs(minutes), 60)
    style = draw(st.sampled_from(["Z", "hh", "hhmm", "hh:mm", "none"]))
    offset = {"Z": "Z", "hh": f"{sign}{hh:02d}", "hhmm": f"{sign}{hh:02d}{mm:02d}",
              "hh:mm": f"{sign}{hh:02d}:{mm:02d}", "none": ""}[style]
    return text + offset, style != "none"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=timestamp_texts())
def test_timestamps_the_loader_accepts_mean_the_same_to_postgres(
    server_url: str, case: tuple[str, bool]
) -> None:
    text, has_offset = case
    problem = check_timestamp(text)
    if not has_offset:
        assert problem == "has no UTC offset"
        return
    with psycopg.connect(server_url) as conn:
        conn.execute("set timezone = 'UTC'")
        if problem is not None:  # only an offset PostgreSQL refuses too
            assert "UTC offset" in problem and "out of range" in problem
            with pytest.raises(psycopg.errors.InvalidTimeZoneDisplacementValue):
                conn.execute("select %s::text::timestamptz", (text,))
            return
        (pg,) = conn.execute("select %s::text::timestamptz", (text,)).fetchone()
    assert pg == datetime.fromisoformat(text)


@settings(max_examples=300, deadline=None)
@given(text=st.from_regex(r"-?[0-9]{1,12}(\.[0-9]{0,4})?", fullmatch=True))
def test_amounts_the_loader_accepts_fit_the_table(server_url: str, text: str) -> None:
    with psycopg.connect(server_url) as conn:
        if check_decimal(text) is None:
            (pg,) = conn.execute("select %s::text::numeric(12, 2)", (text,)).fetchone()
            assert pg == Decimal(text) and pg >= 0
