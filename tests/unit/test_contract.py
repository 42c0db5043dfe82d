"""The data contract as data: consistent with the raw schema, rendered for the README, and
its value checks accept exactly what each type promises."""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone
from importlib import resources

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lifecycle.data.contract import CONTRACT, FILES, ColumnType, contract_markdown, file_spec
from lifecycle.data.values import value_check


def schema_tables() -> dict[str, dict[str, str]]:
    """raw.<table> -> {column: the rest of its definition}, read from schema.sql."""
    text = resources.files("lifecycle.warehouse").joinpath("sql/schema.sql").read_text()
    tables = {}
    for name, body in re.findall(r"create table if not exists (raw\.\w+) \((.*?)\n\);", text,
                                 re.S):
        cols = {}
        for line in body.splitlines():
            m = re.match(r"\s+(\w+)\s+(.*?),?$", line)
            if m and m.group(1) != "primary":
                cols[m.group(1)] = m.group(2)
        tables[name] = cols
    return tables


def test_every_file_maps_onto_its_raw_table() -> None:
    tables = schema_tables()
    assert {spec.table for spec in CONTRACT} == set(tables)
    for spec in CONTRACT:
        table_cols = {c for c in tables[spec.table] if not c.startswith("_")}
        assert set(spec.column_names) == table_cols, spec.name


def test_not_null_columns_are_never_empty_and_enums_match_the_checks() -> None:
    tables = schema_tables()
    for spec in CONTRACT:
        for col in spec.columns:
            ddl = tables[spec.table][col.name]
            if "not null" in ddl and col.default is None:
                assert not col.nullable, f"{spec.name}:{col.name}"
            check = re.search(r"check \(\w+ in \((.*?)\)\)", ddl)
            if check:
                allowed = tuple(v.strip(" '") for v in check.group(1).split(","))
                assert col.type is ColumnType.ENUM and col.choices == allowed


def test_keys_references_and_required_files() -> None:
    assert [s.name for s in CONTRACT if s.required] == [
        "customers.csv", "memberships.csv", "visits.csv"
    ]
    assert FILES["consents.csv"].key == ("customer_id", "channel")
    for spec in CONTRACT:
        assert len(set(spec.column_names)) == len(spec.columns)
        for k in spec.key:
            col = spec.column(k)
            assert col.required and not col.nullable
        for col in spec.columns:
            if col.references:
                ref_file, ref_col = col.references.split(".")
                assert FILES[ref_file + ".csv"].key == (ref_col,)
    optional_columns = [(s.name, c.name) for s in CONTRACT for c in s.columns if not c.required]
    assert optional_columns == [("customers.csv", "club_id"),
                                ("customers.csv", "contact_updated_at")]
    assert FILES["customers.csv"].column("club_id").default == "main"


def test_file_spec_names_the_valid_files() -> None:
    assert file_spec("visits.csv").table == "raw.visits"
    with pytest.raises(KeyError, match="customers.csv, memberships.csv"):
        file_spec("visit.csv")


def test_markdown_table_has_a_row_per_column() -> None:
    md = contract_markdown()
    lines = md.strip().splitlines()
    assert lines[0].startswith("| File | Column |")
    assert len(lines) == 2 + sum(len(s.columns) for s in CONTRACT)
    cells = {len(re.split(r"(?<!\\)\|", line)) for line in lines}
    assert cells == {8}  # 6 columns (+ the empty ends) on every line, pipes escaped
    for spec in CONTRACT:
        assert f"`{spec.name}` ({'required' if spec.required else 'optional'}" in md
        for col in spec.columns:
            assert f"`{col.name}`" in md
    assert "one of active, frozen, cancelled" in md
    assert "`club_id` (optional column)" in md and "default `main`" in md


def test_every_type_names_what_a_valid_value_looks_like() -> None:
    for spec in CONTRACT:
        for col in spec.columns:
            assert col.expected, f"{spec.name}:{col.name}"
            if col.type is ColumnType.ENUM:
                assert col.choices


# -- value checks: what each type promises -------------------------------------------------

CHECK = {t: value_check(col) for spec in CONTRACT for col in spec.columns
         for t in [col.type] if t is not ColumnType.ENUM}


@given(st.dates(date(1000, 1, 1), date(9999, 12, 31)))
def test_any_iso_date_is_a_date(d: date) -> None:
    assert CHECK[ColumnType.DATE](d.isoformat()) is None
    assert CHECK[ColumnType.DATE_OR_TIMESTAMP](d.isoformat()) is None


@given(st.datetimes(datetime(1000, 1, 2), datetime(9999, 12, 30)),
       st.integers(-14 * 60, 14 * 60))
def test_any_iso_timestamp_with_offset_is_a_timestamp(dt: datetime, minutes: int) -> None:
    aware = dt.replace(tzinfo=timezone(timedelta(minutes=minutes)))
    assert CHECK[ColumnType.TIMESTAMP](aware.isoformat()) is None
    assert CHECK[ColumnType.TIMESTAMP](dt.isoformat()) == "has no UTC offset"


@given(st.text(max_size=30))
def test_checks_never_raise(text: str) -> None:
    for check in CHECK.values():
        if check is not None:
            assert check(text) is None or isinstance(check(text), str)


@pytest.mark.parametrize("value, problem", [
    ("0", None), ("14400", None), ("1800.5", None), ("1800.50", None), ("-0.00", None),
    ("9999999999.99", None), ("-1", "negative"), ("1e3", "not a number"), ("1,5", "not a number"),
    ("1_000", "not a number"), (" 5", "not a number"), ("1.234", "has more than 2 decimals"),
    ("10000000000", "too large"), ("NaN", "not a number"),
])
def test_decimal(value: str, problem: str | None) -> None:
    assert CHECK[ColumnType.DECIMAL](value) == problem


@pytest.mark.parametrize("value, problem", [
    ("2024-02-29", None), ("2023-02-29", "not a valid calendar date"),
    ("20240101", "not a date"), ("2024-W01-1", "not a date"), ("01.03.2024", "not a date"),
])
def test_date(value: str, problem: str | None) -> None:
    assert CHECK[ColumnType.DATE](value) == problem


@pytest.mark.parametrize("value, problem", [
    ("2024-03-01T18:30:00+02:00", None), ("2024-03-01 18:30Z", None),
    ("2024-03-01T18:30:00.5-0500", None), ("2024-03-01T18:30:00", "has no UTC offset"),
    ("2024-03-01", "has no UTC offset"), ("20240301T183000+0200", "not a timestamp"),
    ("2024-03-01T25:00:00+02:00", "not a valid date and time"), ("now", "not a timestamp"),
])
def test_timestamp(value: str, problem: str | None) -> None:
    assert CHECK[ColumnType.TIMESTAMP](value) == problem


def test_date_or_timestamp_and_the_small_types() -> None:
    assert CHECK[ColumnType.DATE_OR_TIMESTAMP]("2024-03-01") is None
    assert CHECK[ColumnType.DATE_OR_TIMESTAMP]("2024-03-01T10:00:00+02:00") is None
    assert CHECK[ColumnType.DATE_OR_TIMESTAMP]("2024-03-01T10:00:00") == "has no UTC offset"
    assert CHECK[ColumnType.BOOLEAN]("true") is None
    assert CHECK[ColumnType.BOOLEAN]("True") == "not true or false"
    assert CHECK[ColumnType.TIMEZONE]("Europe/Kyiv") is None
    assert CHECK[ColumnType.TIMEZONE]("America/New_York") is None
    assert CHECK[ColumnType.TIMEZONE]("Kyiv") == "not an IANA time zone name"
    assert CHECK[ColumnType.TIMEZONE]("+02:00") == "not an IANA time zone name"
    # Contacts are loaded as given: dbt flags them downstream.
    for t in (ColumnType.ID, ColumnType.TEXT, ColumnType.EMAIL, ColumnType.PHONE):
        assert CHECK[t] is None
    status = value_check(FILES["memberships.csv"].column("status"))
    assert status is not None and status("frozen") is None and status("Frozen") is not None
