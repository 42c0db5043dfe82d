"""A synthetic fitness club whose data exercises every lifecycle phase, as contract CSVs.

The club's behaviour is ``lifecycle.data.club``'s; this module runs it one chunk of customers at
a time and writes the rows to CSV files, to the warehouse, or both. Everything is vectorised
with numpy, and each chunk has its own seeded generator: the output is a function of
(customers, start, end, seed, club zone) only, byte for byte. The same CSV bytes go to the files
and, for the warehouse fast path, straight into COPY on a thread of its own.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import psycopg
from psycopg import sql

from lifecycle.data.club import CHUNK, SERVICES, club_model
from lifecycle.data.contract import FILES, FileSpec
from lifecycle.data.loader import upsert_from
from lifecycle.settings import get_settings
from lifecycle.warehouse.migrations import migrate
from lifecycle.warehouse.server import connect


class _Aborted(Exception):
    pass


FILE_ORDER = ("customers.csv", "memberships.csv", "visits.csv", "purchases.csv", "consents.csv")


@dataclass
class GenerateReport:
    customers: int
    start: date
    end: date
    seed: int
    rows: dict[str, int]
    files: list[Path] = field(default_factory=list)
    loaded: bool = False
    seconds_generate: float = 0.0  # building rows and CSV bytes
    seconds_write: float = 0.0  # writing the files
    seconds_load: float = 0.0  # waiting for the warehouse (COPY runs alongside generation)
    seconds: float = 0.0  # wall clock, all of it

    def __str__(self) -> str:
        rows = ", ".join(f"{k} {v}" for k, v in self.rows.items())
        return (
            f"{self.customers} customers {self.start}..{self.end} seed {self.seed}: {rows}; "
            f"generate {self.seconds_generate:.1f} s, write {self.seconds_write:.1f} s, "
            f"load wait {self.seconds_load:.1f} s, total {self.seconds:.1f} s"
        )


_DONE = object()  # queue sentinels: commit, or roll back
_ABORT = object()


class _CopyWriter:
    """COPYs CSV blocks into the warehouse on its own thread, so the server works while the
    next chunk is generated; one transaction for the whole run. Empty tables get a straight
    COPY; tables that already hold rows are staged and upserted at the end (the loader's
    upsert)."""

    def __init__(self, url: str, files: tuple[str, ...]) -> None:
        self.url = url
        self.files = files
        self.queue: queue.Queue[object] = queue.Queue(maxsize=6)
        self.error: BaseException | None = None
        self.waited = 0.0
        self.thread = threading.Thread(target=self._run, name="generate-copy", daemon=True)
        self.thread.start()

    def _put(self, item: object) -> None:
        while self.thread.is_alive():
            try:
                self.queue.put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    def put(self, name: str, data: bytes) -> None:
        t = time.perf_counter()
        if self.error is None:
            self._put((name, data))
        self.waited += time.perf_counter() - t
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        """Commit: wait for every COPY and the upserts to finish."""
        t = time.perf_counter()
        self._put(_DONE)
        self.thread.join()
        self.waited += time.perf_counter() - t
        if self.error is not None:
            raise self.error

    def abort(self) -> None:
        """Roll back whatever was copied."""
        self._put(_ABORT)
        self.thread.join()

    def _run(self) -> None:
        try:
            with connect(self.url) as conn:
                targets = {name: self._target(conn, FILES[name]) for name in self.files}
                while True:
                    item = self.queue.get()
                    if item is _DONE:
                        break
                    if item is _ABORT:
                        raise _Aborted
                    name, data = item  # type: ignore[misc]
                    spec = FILES[name]
                    query = sql.SQL("copy {} ({}) from stdin (format csv)").format(
                        sql.Identifier(*targets[name].split(".")),
                        sql.SQL(", ").join(map(sql.Identifier, _written_columns(spec))),
                    )
                    with conn.cursor() as cur, cur.copy(query) as copy:
                        copy.write(data)
                for name, target in targets.items():
                    if not target.startswith("raw."):
                        upsert_from(conn, FILES[name], target, list(_written_columns(FILES[name])))
        except _Aborted:
            pass
        except BaseException as e:  # handed to the generating thread, which raises it
            self.error = e
            while True:  # unblock a producer waiting on a full queue
                try:
                    self.queue.get_nowait()
                except queue.Empty:
                    break

    @staticmethod
    def _target(conn: psycopg.Connection, spec: FileSpec) -> str:
        schema, table = spec.table.split(".")
        has_rows = conn.execute(
            sql.SQL("select exists (select 1 from {})").format(sql.Identifier(schema, table))
        ).fetchone()
        if not has_rows or not has_rows[0]:
            return spec.table
        stage = "_generate_" + table
        cols = sql.SQL(", ").join(
            sql.SQL("{} text").format(sql.Identifier(c)) for c in _written_columns(spec)
        )
        conn.execute(
            sql.SQL("create temp table {} ({}) on commit drop").format(sql.Identifier(stage), cols)
        )
        return stage


def _written_columns(spec: FileSpec) -> tuple[str, ...]:
    return tuple(c.name for c in spec.columns if c.required)


# -- entry point --------------------------------------------------------------------------


def generate(
    customers: int,
    start: date,
    end: date,
    seed: int,
    *,
    out_dir: Path | None = None,
    url: str | None = None,
    club_timezone: str | None = None,
) -> GenerateReport:
    """Generate a club's contract data: CSVs into ``out_dir`` and/or COPY into ``url``.

    With neither, rows are generated and counted only. Loading skips the loader's per-row
    checks (the data is valid by construction) and upserts if the tables already hold rows.
    ``club_timezone`` (default: settings) is the zone of customers with an empty timezone.
    """
    if customers < 0:
        raise ValueError("customers must be >= 0")
    if end < start:
        raise ValueError(f"end ({end}) is before start ({start})")
    began = time.perf_counter()
    model = club_model(start, end, club_timezone or get_settings().club_timezone, customers)
    report = GenerateReport(customers, start, end, seed, {name: 0 for name in FILE_ORDER})
    handles = {}
    writer: _CopyWriter | None = None
    try:
        if out_dir is not None:
            out_dir = Path(out_dir)
            out_dir.mkdir(parents=True, exist_ok=True)
            for name in FILE_ORDER:
                path = out_dir / name
                handles[name] = path.open("wb")
                header = ",".join(_written_columns(FILES[name])) + "\n"
                handles[name].write(header.encode())
                report.files.append(path)
        if url is not None:
            migrate(url)
            writer = _CopyWriter(url, FILE_ORDER)
        counters = {name: 0 for name in FILE_ORDER}
        for index, first_id in enumerate(range(1, customers + 1, CHUNK)):
            t = time.perf_counter()
            n = min(CHUNK, customers - first_id + 1)
            blocks = model.chunk(index, first_id, n, seed, counters)
            report.seconds_generate += time.perf_counter() - t
            for name in FILE_ORDER:
                data, rows = blocks[name]
                report.rows[name] += rows
                if not data:
                    continue
                if name in handles:
                    t = time.perf_counter()
                    handles[name].write(data)
                    report.seconds_write += time.perf_counter() - t
                if writer is not None:
                    writer.put(name, data)
        if writer is not None:
            writer.close()
            report.seconds_load = writer.waited
            report.loaded = True
            writer = None
    finally:
        for h in handles.values():
            h.close()
        if writer is not None:  # failed above: roll the COPYs back
            writer.abort()
    report.seconds = time.perf_counter() - began
    return report


def services_catalog() -> list[tuple[str, str]]:
    """The services the generator sells, with their category (as services.csv would say)."""
    return [(s[0], s[1]) for s in SERVICES]
