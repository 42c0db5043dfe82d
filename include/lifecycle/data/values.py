"""What the loader says about one value: is it valid (as PostgreSQL and Python will read it),
how it may be shown in an error (contacts masked), and where a broken quote opened.

The checks accept only what PostgreSQL stores and the package's Python code reads back the same
way: ASCII digits, UTC offsets within PostgreSQL's +-15:59, instants Python can represent in any
time zone. Each returns None when the value is valid, else what is wrong.
"""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Callable
from datetime import UTC, date, datetime
from functools import cache
from pathlib import Path

from lifecycle.data.contract import Column, ColumnType
from lifecycle.logs import mask_email, mask_phone, mask_text

VALUE_WIDTH = 60  # longest value quoted back in an error

# Only forms PostgreSQL reads the same way as Python: YYYY-MM-DD[T ]HH:MM[:SS[.ffffff]]+offset.
# [0-9], not \d: \d also matches other scripts' digits, which PostgreSQL does not read.
_TIMESTAMP = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]{1,6})?)?"
    r"(Z|[+-]([0-9]{2})(?::?([0-9]{2}))?)"
)
_TIMESTAMP_NO_OFFSET = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]+)?)?"
)
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_NUMBER = re.compile(r"(-?)([0-9]+)(?:\.([0-9]+))?")

# PostgreSQL refuses a UTC offset of 16 hours or more ("time zone displacement out of range"):
# hours up to 15, minutes up to 59.
MAX_OFFSET = ("15", "59")
# Python (psycopg, planning) must read every instant back in any zone, up to +-1 day away.
FIRST_INSTANT = datetime(1, 1, 2, tzinfo=UTC)
LAST_INSTANT = datetime(9999, 12, 30, 23, 59, 59, 999999, tzinfo=UTC)
_INSTANT_RANGE = "a time between 0001-01-02 and 9999-12-30 (UTC)"


def check_date(value: str) -> str | None:
    if len(value) != 10 or not _DATE.fullmatch(value):
        return "not a date"
    try:
        date.fromisoformat(value)
    except ValueError:
        return "not a valid calendar date"
    return None


def check_timestamp(value: str) -> str | None:
    m = _TIMESTAMP.fullmatch(value)
    if m is None:
        if _TIMESTAMP_NO_OFFSET.fullmatch(value) or check_date(value) is None:
            return "has no UTC offset"
        return "not a timestamp"
    offset, hours, minutes = m.groups()
    # two ASCII digits each: string order is numeric order (a hot path: no int())
    if offset != "Z" and (hours > MAX_OFFSET[0] or (minutes or "00") > MAX_OFFSET[1]):
        return f"UTC offset {offset} is out of range (PostgreSQL takes -15:59 to +15:59)"
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return "not a valid date and time"
    if value[:4] in ("0001", "9999"):  # only these years can leave the range in UTC
        try:
            in_range = FIRST_INSTANT <= parsed.astimezone(UTC) <= LAST_INSTANT
        except OverflowError:
            in_range = False
        if not in_range:
            return f"out of range, expected {_INSTANT_RANGE}"
    return None


def check_date_or_timestamp(value: str) -> str | None:
    if len(value) != 10:
        return check_timestamp(value)
    problem = check_date(value)
    if problem is None:  # read in the club's zone, up to a day from UTC
        if not FIRST_INSTANT.date() <= date.fromisoformat(value) <= LAST_INSTANT.date():
            return f"out of range, expected {_INSTANT_RANGE}"
    return problem


def check_decimal(value: str) -> str | None:
    m = _NUMBER.fullmatch(value)
    if m is None:
        return "not a number"
    sign, whole, frac = m.groups()
    if sign and (whole.strip("0") or (frac or "").strip("0")):
        return "negative"
    if frac is not None and len(frac) > 2:
        return "has more than 2 decimals"
    if len(whole.lstrip("0")) > 10:
        return "too large"
    return None


def check_boolean(value: str) -> str | None:
    return None if value in ("true", "false") else "not true or false"


@cache
def _zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def check_timezone(value: str) -> str | None:
    return None if value in _zones() else "not an IANA time zone name"


def _enum_check(choices: tuple[str, ...]) -> Callable[[str], str | None]:
    allowed = frozenset(choices)

    def check(value: str) -> str | None:
        return None if value in allowed else "not an allowed value"

    return check


_CHECKS: dict[ColumnType, Callable[[str], str | None]] = {
    ColumnType.DATE: check_date,
    ColumnType.TIMESTAMP: check_timestamp,
    ColumnType.DATE_OR_TIMESTAMP: check_date_or_timestamp,
    ColumnType.DECIMAL: check_decimal,
    ColumnType.BOOLEAN: check_boolean,
    ColumnType.TIMEZONE: check_timezone,
}


def value_check(column: Column) -> Callable[[str], str | None] | None:
    """The check for a non-empty value of ``column``; None if any text is valid."""
    if column.type is ColumnType.ENUM:
        return _enum_check(column.choices)
    return _CHECKS.get(column.type)


# -- showing values in errors -------------------------------------------------------------


def trunc(value: str) -> str:
    return value if len(value) <= VALUE_WIDTH else value[: VALUE_WIDTH - 1] + "…"


def masked(value: str, column: Column | None = None) -> str:
    """``value`` as an error may quote it: a contact column's value masked as such, any
    phone- or email-like text masked wherever it is, then truncated (masked first, so a cut
    never leaves part of an address readable)."""
    if column is not None and column.type is ColumnType.EMAIL:
        value = mask_email(value) or ""
    elif column is not None and column.type is ColumnType.PHONE:
        value = mask_phone(value) or ""
    return trunc(mask_text(value))


def masked_row(row: list[str], columns: list[Column]) -> str:
    """A row as an error may quote it, each value shown as its header column's."""
    return trunc(",".join(
        masked(v, columns[i] if i < len(columns) else None) for i, v in enumerate(row)
    ))


# -- where a quote opened -----------------------------------------------------------------


def open_quote(path: Path, start: int) -> tuple[int, int, int] | None:
    """Where the quote left open in the CSV record starting on line ``start`` opened.

    (line, character on that line, field index in the record), all 1-based but the field
    index (0-based); None if the record closes every quote (the error was something else).
    Reads the file line by line, as the csv module does: standard quoting, doubled quotes.
    """
    opened: tuple[int, int, int] | None = None
    quoted = False
    field = 0
    at_start = True  # at the start of a field
    with path.open(encoding="utf-8-sig", newline="", errors="replace") as f:
        for n, line in enumerate(f, start=1):
            if n < start:
                continue
            i = 0
            while i < len(line):
                ch = line[i]
                if quoted:
                    if ch == '"':
                        if line[i + 1 : i + 2] == '"':
                            i += 1  # a doubled quote inside the value
                        else:
                            quoted, opened = False, None
                elif ch == '"' and at_start:
                    quoted, opened = True, (n, i + 1, field)
                elif ch == ",":
                    field += 1
                    at_start = True
                    i += 1
                    continue
                elif ch in "\r\n":
                    return opened  # the record ended with every quote closed
                at_start = False
                i += 1
    return opened
