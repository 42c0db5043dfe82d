"""Load a directory of contract CSVs into the ``raw`` schema: all of it, or nothing.

One streaming pass per file checks every value against ``lifecycle.data.contract`` and COPYs the
rows, as parsed, into a temp table (text columns plus the CSV line number). Checks that need
the whole file or the warehouse (duplicate ids, unknown customers) run in SQL on the temp
tables, so their errors still name the line. Only a clean load is upserted, in the same
transaction; a rejected one leaves the warehouse as it was.

Memory stays bounded: the only per-row state kept in Python is the set of customer ids in
this load's customers.csv (for the unknown-customer check).
"""

from __future__ import annotations

import csv
import difflib
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import psycopg
from psycopg import sql

from lifecycle.data.contract import CONTRACT, FILES, FileSpec
from lifecycle.data.values import (
    check_date,
    masked,
    masked_row,
    open_quote,
    value_check,
)
from lifecycle.logs import mask_text
from lifecycle.settings import get_settings
from lifecycle.warehouse.migrations import migrate
from lifecycle.warehouse.server import connect

CUSTOMERS = "customers.csv"
NOT_UTF8 = "not valid UTF-8; save the file as UTF-8"


@dataclass(frozen=True)
class LoadIssue:
    """One problem in the input, located as precisely as it can be."""

    file: str
    line: int | None  # 1-based physical line, header = 1; None = the whole file
    column: str | None
    value: str | None  # as found, truncated
    reason: str  # what is wrong and what would be valid

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f" line {self.line}"
        if self.column is not None:
            where += f", column {self.column}"
        if self.value is not None:
            where += f", value {self.value!r}"
        return f"{where}: {self.reason}"


class LoadError(Exception):
    """The load was rejected; nothing was written. ``errors`` lists the first problems."""

    def __init__(self, errors: list[LoadIssue], suppressed: int = 0, source: str = "") -> None:
        self.errors = errors
        self.suppressed = suppressed
        self.source = source
        super().__init__(str(self))

    def __str__(self) -> str:
        total = len(self.errors) + self.suppressed
        noun = "problem" if total == 1 else "problems"
        head = f"Load rejected, nothing was loaded: {total} {noun}"
        if self.source:
            head += f" in {self.source}"
        lines = [head + ":"] + [f"  {issue}" for issue in self.errors]
        if self.suppressed:
            lines.append(
                f"  ... and {self.suppressed} more not shown (raise max_errors to see them)"
            )
        return "\n".join(lines)


@dataclass(frozen=True)
class FileLoad:
    file: str
    rows: int
    inserted: int
    updated: int  # ids that were already in the warehouse


@dataclass
class LoadReport:
    path: Path
    files: dict[str, FileLoad]
    seconds: float
    ignored: list[str] = field(default_factory=list)  # *.csv in the directory not in the contract

    @property
    def rows(self) -> dict[str, int]:
        return {name: f.rows for name, f in self.files.items()}

    def __str__(self) -> str:
        parts = [
            f"{f.file}: {f.rows} rows ({f.inserted} new, {f.updated} updated)"
            for f in self.files.values()
        ]
        if self.ignored:
            parts.append("ignored (not in the contract): " + ", ".join(self.ignored))
        return f"Loaded {self.path} in {self.seconds:.1f} s\n  " + "\n  ".join(parts)


def _by_line(issue: LoadIssue) -> int:
    return issue.line or 0


class _Issues:
    """Collects issues: keeps the ``cap`` earliest lines per file, counts all."""

    def __init__(self, cap: int) -> None:
        self.cap = max(cap, 1)
        self.kept: dict[str, list[LoadIssue]] = {}
        self.total = 0

    def add(self, issue: LoadIssue) -> None:
        self.total += 1
        kept = self.kept.setdefault(issue.file, [])
        kept.append(issue)
        if len(kept) >= 2 * self.cap:  # SQL checks add earlier lines after the streaming pass
            kept.sort(key=_by_line)
            del kept[self.cap :]

    def more(self, count: int) -> None:
        """Count issues found but not itemised."""
        self.total += count

    def error(self, source: str) -> LoadError:
        order = {name: i for i, name in enumerate(FILES)}
        issues = sorted(
            (i for kept in self.kept.values() for i in kept),
            key=lambda i: (order.get(i.file, len(order)), _by_line(i)),
        )
        shown = issues[: self.cap]
        return LoadError(shown, self.total - len(shown), source)


# -- staging ------------------------------------------------------------------------------


@dataclass
class _Staged:
    spec: FileSpec
    table: str  # temp table name
    columns: list[str]  # contract columns present in the file, in file order
    rows: int = 0
    complete: bool = False  # read to the end with a valid header


def _stage_name(spec: FileSpec) -> str:
    return "_stage_" + spec.name.removesuffix(".csv")


def _lines(f: TextIO, name: str, issues: _Issues) -> Iterator[str]:
    # Python's csv accepts NUL; PostgreSQL text does not. Report and drop it.
    for n, line in enumerate(f, start=1):
        if "\x00" in line:
            text = masked(line.rstrip("\r\n").replace("\x00", "\\0"))
            issues.add(LoadIssue(name, n, None, text, "contains a NUL byte (\\0); remove it"))
            line = line.replace("\x00", "")
        yield line


def _has_nul(path: Path) -> bool:
    # A C-speed scan, so the per-line NUL check only runs for the rare file that needs it.
    with path.open("rb") as f:
        while block := f.read(1 << 24):
            if b"\x00" in block:
                return True
    return False


def _bad_encoding_line(path: Path) -> int:
    with path.open("rb") as f:
        for n, raw in enumerate(f, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                return n
    return 0


def _csv_issue(
    name: str, path: Path, start: int, line: int, header: list[str] | None, error: csv.Error
) -> LoadIssue:
    """A CSV syntax error; a quote never closed is reported where it opened.

    The csv module reads an unclosed quote to the end of the file (or to its field size
    limit), so its own line is where it gave up: the record's start (``start``) is scanned for
    the quote instead.
    """
    fix = ("quote values that hold commas, quotes or line breaks, and double any quote inside "
           "a quoted value")
    opened = open_quote(path, start)
    if opened is None:
        return LoadIssue(name, line, None, None, f"not valid CSV ({error}); {fix}")
    at, char, field = opened
    column = header[field] if header is not None and field < len(header) else None
    where = f"character {char} of the line"
    if column is None:
        where += f", value {field + 1} of the row"
    return LoadIssue(
        name, at, column, None,
        f"not valid CSV: a quote opened here ({where}) is never closed, so the value runs "
        f"on to {'the end of the file' if 'end of data' in str(error) else 'a later line'} "
        f"({error}); close the quote, or {fix}",
    )


def _check_header(
    spec: FileSpec, header: list[str], issues: _Issues
) -> bool:
    ok = True
    valid = ", ".join(spec.column_names)
    seen: set[str] = set()
    for i, name in enumerate(header):
        if name in seen:
            issues.add(LoadIssue(spec.name, 1, masked(name), None,
                                 "column appears twice in the header"))
            ok = False
        seen.add(name)
        if name not in spec.column_names:
            close = difflib.get_close_matches(name, spec.column_names, n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            reason = f"unknown column (position {i + 1}); {hint}the columns are: {valid}"
            issues.add(LoadIssue(spec.name, 1, masked(name), None, reason))
            ok = False
    for name in spec.required_columns:
        if name not in seen:
            reason = f"required column missing from the header; the columns are: {valid}"
            issues.add(LoadIssue(spec.name, 1, name, None, reason))
            ok = False
    return ok


def _stage(
    conn: psycopg.Connection,
    spec: FileSpec,
    path: Path,
    issues: _Issues,
    known: set[str],
    refs: set[str],
) -> _Staged:
    """Validate one file row by row and COPY it into a temp table."""
    staged = _Staged(spec, _stage_name(spec), [])
    name = spec.name
    with path.open(encoding="utf-8-sig", newline="") as f:
        lines: Iterable[str] = _lines(f, name, issues) if _has_nul(path) else f
        reader = csv.reader(lines, strict=True)
        try:
            header = next(reader)
        except StopIteration:
            issues.add(
                LoadIssue(name, 1, None, None, "empty file; expected a header row: "
                          + ",".join(spec.required_columns))
            )
            return staged
        except csv.Error as e:
            issues.add(_csv_issue(name, path, 1, 1, None, e))
            return staged
        except UnicodeDecodeError:
            issues.add(LoadIssue(name, _bad_encoding_line(path) or None, None, None, NOT_UTF8))
            return staged
        if not _check_header(spec, header, issues):
            return staged
        staged.columns = header
        _create_stage(conn, staged)
        staged.complete = _copy_rows(conn, staged, reader, path, issues, known, refs)
    return staged


def _create_stage(conn: psycopg.Connection, staged: _Staged) -> None:
    cols = sql.SQL(", ").join(
        sql.SQL("{} text").format(sql.Identifier(c)) for c in staged.spec.column_names
    )
    conn.execute(
        sql.SQL("create temp table {} ({}, _line bigint not null) on commit drop").format(
            sql.Identifier(staged.table), cols
        )
    )


def _copy_rows(
    conn: psycopg.Connection,
    staged: _Staged,
    reader: Iterable[list[str]],
    path: Path,
    issues: _Issues,
    known: set[str],
    refs: set[str],
) -> bool:
    spec, name, header = staged.spec, staged.spec.name, staged.columns
    width = len(header)
    cols = [spec.column(c) for c in header]
    not_empty = [(i, c) for i, c in enumerate(cols) if not c.nullable]
    typed = [(i, c, chk) for i, c in enumerate(cols) if (chk := value_check(c)) is not None]
    ref_i = next((i for i, c in enumerate(cols) if c.references), None)
    key_i = header.index("customer_id") if name == CUSTOMERS else None
    span = None
    if "starts_on" in header and "ends_on" in header:
        span = (header.index("starts_on"), header.index("ends_on"))
    add = issues.add
    copy_sql = sql.SQL("copy {} ({}, _line) from stdin").format(
        sql.Identifier(staged.table), sql.SQL(", ").join(map(sql.Identifier, header))
    )
    prev = reader.line_num  # type: ignore[attr-defined]
    rows = 0
    with conn.cursor() as cur, cur.copy(copy_sql) as copy:
        write = copy.write_row
        try:
            for row in reader:
                line = prev + 1  # where the record starts (a quoted value may span lines)
                prev = reader.line_num  # type: ignore[attr-defined]
                if not row:
                    continue  # blank line
                if len(row) != width:
                    add(LoadIssue(name, line, None, masked_row(row, cols),
                                  f"has {len(row)} values, the header has {width}"))
                    continue
                if "" in row:
                    for i, col in not_empty:
                        if not row[i]:
                            add(LoadIssue(name, line, col.name, "",
                                          f"empty; expected {col.expected}"))
                for i, col, check in typed:
                    value = row[i]
                    if value:
                        problem = check(value)
                        if problem is not None:
                            add(LoadIssue(name, line, col.name, masked(value, col),
                                          f"{problem}; expected {col.expected}"))
                if span is not None:
                    starts, ends = row[span[0]], row[span[1]]
                    # ISO dates compare as strings; only meaningful when both are valid.
                    if ends < starts and check_date(starts) is None and check_date(ends) is None:
                        add(LoadIssue(name, line, "ends_on", ends,
                                      f"before starts_on ({starts}); expected a date on or "
                                      "after starts_on"))
                if key_i is not None:
                    known.add(row[key_i])
                elif ref_i is not None:
                    customer = row[ref_i]
                    if customer not in known:
                        refs.add(customer)
                row.append(line)  # type: ignore[arg-type]
                write(row)
                rows += 1
        except csv.Error as e:
            add(_csv_issue(name, path, prev + 1, reader.line_num, header, e))  # type: ignore[attr-defined]
            return False
        except UnicodeDecodeError:
            add(LoadIssue(name, _bad_encoding_line(path) or None, None, None, NOT_UTF8))
            return False
        finally:
            staged.rows = rows
    return True


# -- whole-load checks in SQL -------------------------------------------------------------


def _check_customers(
    conn: psycopg.Connection, staged: list[_Staged], refs: set[str], issues: _Issues
) -> None:
    """Report rows whose customer is neither in this load nor already in the warehouse."""
    refs.discard("")  # empty ids are reported as empty values
    if not refs:
        return
    conn.execute("create temp table _stage_refs (customer_id text primary key) on commit drop")
    with conn.cursor() as cur, cur.copy("copy _stage_refs (customer_id) from stdin") as copy:
        for customer in refs:
            copy.write_row((customer,))
    conn.execute(
        "delete from _stage_refs r using raw.customers c where c.customer_id = r.customer_id"
    )
    for st in staged:
        if st.spec.name == CUSTOMERS or "customer_id" not in st.columns:
            continue
        query = sql.SQL(
            "select s._line, s.customer_id, count(*) over () from {} s "
            "join _stage_refs r using (customer_id) order by s._line limit %s"
        ).format(sql.Identifier(st.table))
        found = conn.execute(query, (issues.cap,)).fetchall()
        for line, customer, _ in found:
            issues.add(LoadIssue(
                st.spec.name, line, "customer_id", masked(customer),
                "unknown customer; expected a customer_id listed in customers.csv or "
                "already in the warehouse",
            ))
        if found:
            issues.more(found[0][2] - len(found))


def _check_duplicates(conn: psycopg.Connection, st: _Staged, issues: _Issues) -> None:
    key = [sql.Identifier(k) for k in st.spec.key]
    query = sql.SQL(
        "with d as (select {key}, array_agg(_line order by _line) as lines from {t} "
        "where {nonempty} group by {key} having count(*) > 1) "
        "select lines, sum(cardinality(lines) - 1) over (), {key} from d "
        "order by lines[1] limit %s"
    ).format(
        key=sql.SQL(", ").join(key),
        t=sql.Identifier(st.table),
        nonempty=sql.SQL(" and ").join(sql.SQL("{} <> ''").format(k) for k in key),
    )
    shown = 0
    total = 0
    for lines, group_total, *values in conn.execute(query, (issues.cap,)):
        total = int(group_total)
        for line in lines[1:]:
            issues.add(LoadIssue(
                st.spec.name, line, ", ".join(st.spec.key), masked(", ".join(values)),
                f"duplicate: the same {' + '.join(st.spec.key)} is on line {lines[0]}; "
                "expected each to appear once per file",
            ))
            shown += 1
    issues.more(total - shown)


# -- upsert -------------------------------------------------------------------------------


def upsert_from(
    conn: psycopg.Connection, spec: FileSpec, source: str, columns: list[str]
) -> tuple[int, int]:
    """Upsert ``spec.table`` from a staging table of text columns; returns (inserted, updated).

    Only ``columns`` are written: an optional column absent from the file keeps its table
    default on insert and its stored value on update. Empty text counts as empty (NULL).
    """
    target_cols = [c for c in spec.column_names if c in columns]
    exprs = []
    for name in target_cols:
        col = spec.column(name)
        expr: sql.Composable = sql.Identifier(name)
        if col.nullable:
            expr = sql.SQL("nullif({}, '')").format(expr)
        if col.default is not None:
            expr = sql.SQL("coalesce({}, {})").format(expr, sql.Literal(col.default))
        if col.sql_type != "text":
            expr = sql.SQL("{}::{}").format(expr, sql.SQL(col.sql_type))
        exprs.append(expr)
    updates = [
        sql.SQL("{0} = excluded.{0}").format(sql.Identifier(c))
        for c in target_cols
        if c not in spec.key
    ] + [sql.SQL("_loaded_at = now()")]
    schema, table = spec.table.split(".")
    query = sql.SQL(
        "with up as (insert into {target} ({cols}) select {exprs} from {source} "
        "on conflict ({key}) do update set {updates} returning (xmax = 0) as inserted) "
        "select count(*) filter (where inserted), count(*) from up"
    ).format(
        target=sql.Identifier(schema, table),
        cols=sql.SQL(", ").join(map(sql.Identifier, target_cols)),
        exprs=sql.SQL(", ").join(exprs),
        source=sql.Identifier(source),
        key=sql.SQL(", ").join(map(sql.Identifier, spec.key)),
        updates=sql.SQL(", ").join(updates),
    )
    row = conn.execute(query).fetchone()
    assert row is not None
    inserted, total = row
    return inserted, total - inserted


def set_club_timezone(conn: psycopg.Connection, club_timezone: str) -> None:
    """Read date-only and offset-less values in the club's zone for this transaction."""
    conn.execute("select set_config('TimeZone', %s, true)", (club_timezone,))


# -- entry point --------------------------------------------------------------------------


def load_dir(
    url: str, path: Path, *, max_errors: int = 50, club_timezone: str | None = None
) -> LoadReport:
    """Validate and load the contract CSVs in ``path`` in one transaction, or raise LoadError.

    ``club_timezone`` (default: settings) is the zone a date-only ``created_at`` is read in.
    """
    started = time.perf_counter()
    path = Path(path)
    source = str(path)
    issues = _Issues(max_errors)
    if not path.is_dir():
        issues.add(LoadIssue(source, None, None, None, "not a directory of CSV files"))
        raise issues.error(source)
    present = {spec.name: path / spec.name for spec in CONTRACT if (path / spec.name).is_file()}
    ignored = sorted(p.name for p in path.iterdir()
                     if p.suffix.lower() == ".csv" and p.name not in FILES)
    for spec in CONTRACT:
        if spec.required and spec.name not in present:
            lowered = {n.lower(): n for n in ignored}
            close = difflib.get_close_matches(spec.name, list(lowered), n=1, cutoff=0.75)
            hint = f" (found {lowered[close[0]]}: rename it to {spec.name})" if close else ""
            issues.add(LoadIssue(spec.name, None, None, None,
                                 f"required file missing from {source}{hint}"))

    migrate(url)
    with connect(url) as conn:
        set_club_timezone(conn, club_timezone or get_settings().club_timezone)
        known: set[str] = set()
        refs: set[str] = set()
        staged: list[_Staged] = []
        for spec in CONTRACT:
            if spec.name in present:
                staged.append(_stage(conn, spec, present[spec.name], issues, known, refs))
        known.clear()
        customers = next((s for s in staged if s.spec.name == CUSTOMERS), None)
        # Without a complete customers.csv every reference would look unknown: skip the check.
        if customers is not None and customers.complete:
            _check_customers(conn, staged, refs, issues)
        refs.clear()
        usable = [s for s in staged if s.columns]
        if issues.total:
            for st in usable:
                _check_duplicates(conn, st, issues)
            raise issues.error(source)

        files: dict[str, FileLoad] = {}
        try:
            with conn.transaction():
                for st in usable:
                    inserted, updated = upsert_from(conn, st.spec, st.table, st.columns)
                    files[st.spec.name] = FileLoad(st.spec.name, st.rows, inserted, updated)
        except psycopg.errors.CardinalityViolation:
            # ON CONFLICT refuses to touch a row twice: some file repeats an id.
            for st in usable:
                _check_duplicates(conn, st, issues)
            if not issues.total:
                raise
            raise issues.error(source) from None
        except psycopg.errors.DataError as e:
            issues.add(LoadIssue(source, None, None, None,
                                 "the warehouse refused a value: "
                                 + mask_text(e.diag.message_primary or "")))
            raise issues.error(source) from None
    return LoadReport(path, files, time.perf_counter() - started, ignored)
