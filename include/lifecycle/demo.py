"""``make demo``: a synthetic club, then the daily DAG through Airflow for consecutive days."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from lifecycle.airflow_env import local_airflow_env, local_home
from lifecycle.calls.listing import call_list
from lifecycle.planning.plan import PHASES_IN_ORDER
from lifecycle.rules.loading import load_rules
from lifecycle.settings import Settings, get_settings
from lifecycle.transform.dbt import ensure_manifest
from lifecycle.warehouse.migrations import migrate
from lifecycle.warehouse.server import masked, resolve_url

# The demo takes the warehouse's own database (the embedded server's, or the one
# LIFECYCLE_WAREHOUSE_URL names), so every other command and the local Airflow UI see its data
# with no flag; it marks the database so the next demo knows it may replace it.
DEMO_MARK = "lifecycle demo: a synthetic club, replaced by the next `lifecycle demo`"
RESULT_PREFIX = "@@lifecycle-day "  # scripts/run_daily.py marks its result lines so


class DemoRefused(RuntimeError):
    """The warehouse holds data the demo did not make: it is left as it is."""


def foreign_data(url: str) -> list[str]:
    """Tables of the database at ``url`` holding rows not made by a demo ("schema.table"):
    empty for a database a demo made (its comment is DEMO_MARK) or that holds no row."""
    with psycopg.connect(url) as conn:
        comment = conn.execute(
            "select shobj_description(oid, 'pg_database') from pg_database "
            "where datname = current_database()"
        ).fetchone()[0]
        if comment == DEMO_MARK:
            return []
        tables = conn.execute(
            "select n.nspname, c.relname from pg_class c join pg_namespace n "
            "on n.oid = c.relnamespace where c.relkind in ('r', 'p') "
            "and n.nspname not in ('pg_catalog', 'information_schema') "
            "and n.nspname not like 'pg\\_%' order by 1, 2"
        ).fetchall()
        return [
            f"{schema}.{table}"
            for schema, table in tables
            if conn.execute(
                sql.SQL("select exists (select from {})").format(sql.Identifier(schema, table))
            ).fetchone()[0]
        ]


def replace_database(url: str, *, replace: bool = False) -> str:
    """Drop and create the warehouse's database for the demo (marked DEMO_MARK); returns its
    URL. Raises DemoRefused, touching nothing, if it holds data a demo did not make (unless
    ``replace``)."""
    name = conninfo_to_dict(url).get("dbname")
    if not name:
        raise DemoRefused(f"{masked(url)} names no database")
    try:
        found = foreign_data(url)
    except psycopg.OperationalError:
        found = []  # the database does not exist yet: create it
    if found and not replace:
        shown = ", ".join(found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "")
        raise DemoRefused(
            f"the warehouse {masked(url)} holds data the demo did not make (rows in {shown}). "
            "The demo replaces the whole database: run `lifecycle demo --replace` to wipe it, "
            "or give the demo a warehouse of its own (LIFECYCLE_HOME=<another dir> for a second "
            "embedded server, or LIFECYCLE_WAREHOUSE_URL=<an empty database>)"
        )
    with psycopg.connect(make_conninfo(url, dbname="postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("drop database if exists {} with (force)").format(
            sql.Identifier(name)))
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("comment on database {} is {}").format(
            sql.Identifier(name), sql.Literal(DEMO_MARK)))
    return url


def ui_running(settings=None) -> int | None:
    """The pid of a running `lifecycle airflow` on the local Airflow home, if any."""
    pid_file = local_home(settings) / "ui.pid"
    try:
        pid = int(pid_file.read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def run_demo(
    *, customers: int, days: int, start: date, end: date, seed: int, replace: bool = False
) -> int:
    from lifecycle.data.generator import generate
    from lifecycle.data.loader import load_dir

    # A log file or CI has no terminal width: keep the per-day table readable anyway.
    console = Console(width=max(Console().width, 110))
    settings = get_settings()
    t0 = time.monotonic()
    pid = ui_running(settings)
    if pid:
        console.print(f"[red]the local Airflow UI runs (pid {pid}) on the demo's metadata[/]: "
                      "stop it (Ctrl-C in its terminal) and run the demo again")
        return 1
    try:
        url = replace_database(resolve_url(settings), replace=replace)
    except DemoRefused as exc:
        console.print(f"[red]not replaced[/]: {exc}")
        return 1
    migrate(url)
    console.print(f"[bold]warehouse[/] {masked(url)}")
    steps = _Steps(t0)
    steps.lap("warehouse")

    data_dir = settings.state_dir / "demo" / "data"
    gen = generate(customers, start, end, seed, out_dir=data_dir)
    console.print(f"[bold]generated[/] {gen}")
    loaded = load_dir(url, data_dir)
    console.print(f"[bold]loaded[/] {loaded}")
    steps.lap("generate and load")

    first = end - timedelta(days=days - 1)
    ensure_manifest(settings)  # the DAG renders its dbt tasks from it (no `dbt ls`)
    steps.lap("dbt parse")
    # A fresh Airflow metadata DB: the demo's runs must not meet an earlier demo's runs.
    # `lifecycle airflow` serves the UI from this same home.
    airflow_home = local_home(settings)
    shutil.rmtree(airflow_home, ignore_errors=True)
    env = {**os.environ, **local_airflow_env(url, settings)}
    script = settings.project_dir / "scripts" / "run_daily.py"
    cmd = [sys.executable, str(script), first.isoformat(), str(days), "--clock", "logical"]
    console.print(f"[bold]airflow[/] lifecycle_daily, {days} days from {first} (logical clock)")

    table = Table(title="lifecycle_daily: messages per day (phase sms/email) and skips")
    table.add_column("date", no_wrap=True)
    for phase in PHASES_IN_ORDER:
        table.add_column(phase, justify="right")
    table.add_column("skipped", justify="right")
    table.add_column("state")
    table.add_column("s", justify="right")

    # The AS IS vs TO BE simulation lives in databases of its own and needs nothing from the
    # days: it runs beside them (one process the GIL does not share with Airflow's) and the
    # report reads its result once both are done.
    sim = _start_simulation(url, seed, settings, min(customers, DEMO_SIM_CUSTOMERS))
    try:
        failed = None
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        ) as progress:
            bar = progress.add_task("days", total=days)
            airflow_home.mkdir(parents=True, exist_ok=True)
            log_path = airflow_home / "run_daily.log"
            with open(log_path, "w") as log:
                proc = subprocess.Popen(
                    cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
                )
                assert proc.stdout is not None
                for raw in proc.stdout:
                    if not raw.startswith(RESULT_PREFIX):
                        log.write(raw)
                        continue
                    line = json.loads(raw[len(RESULT_PREFIX) :])
                    if "error" in line:
                        failed = line
                        continue
                    msgs = line["counts"]["messages"]
                    cells = [
                        f"{msgs.get(f'{p}:sms', 0)}/{msgs.get(f'{p}:email', 0)}"
                        for p in PHASES_IN_ORDER
                    ]
                    table.add_row(
                        line["date"],
                        *cells,
                        str(sum(line["counts"]["skipped"].values())),
                        line["state"],
                        f"{line['seconds']:.1f}",
                    )
                    progress.update(bar, advance=1, description=line["date"])
                    if line["state"] != "success":
                        failed = line
                rc = proc.wait()
        console.print(table)
        steps.lap(f"airflow, {days} days")
        if rc != 0 or failed:
            _stop(sim)
            console.print(f"[red]the DAG failed[/]: {failed}; Airflow's log: {log_path}")
            return 1
        _print_totals(console, url, first, end)
        _provider_reports(console, url, first, end, seed)
        steps.lap("provider reports")
    except BaseException:  # an error or Ctrl-C: the simulation stops with the demo
        _stop(sim)
        raise
    if not _simulation_done(console, sim, steps):
        return 1
    _report(console, url, first, end, steps)
    console.print(f"done in {time.monotonic() - t0:.0f} s ({steps})")
    console.print(
        f"[bold]next[/] every command now reads this club: `lifecycle outbox --date {end}`, "
        f"`lifecycle preview --date {end}`, `lifecycle report --from {first} --to {end}`; the "
        "Airflow UI with these runs: `lifecycle airflow` (or `make airflow`)"
    )
    return 0


# A small AS IS vs TO BE run, short enough to finish beside the 30 days (it took 357 s beside
# them, bench/RESULTS.md); run `lifecycle simulate --customers 10000 --days 365` for the year.
DEMO_SIM_CUSTOMERS = 2000
DEMO_SIM_DAYS = 45
# os.setpriority: 0 is normal, 19 the lowest (the 30 days took 337 s beside it at 10, 318 s at 19)
SIMULATION_NICENESS = 19


class _Steps:
    """Seconds each step of the demo took, for its last line."""

    def __init__(self, t0: float) -> None:
        self.last = t0
        self.done: list[tuple[str, float | None]] = []

    def lap(self, name: str) -> None:
        now = time.monotonic()
        self.done.append((name, now - self.last))
        self.last = now

    def note(self, text: str) -> None:
        """A line in the list that took no time of its own (a step run beside the others)."""
        self.done.append((text, None))

    def __str__(self) -> str:
        return ", ".join(name if seconds is None else f"{name} {seconds:.0f} s"
                         for name, seconds in self.done)


def _provider_reports(console: Console, url: str, first: date, last: date, seed: int) -> None:
    """The sandbox providers' delivery reports for the demo's sends, then the contact marts.

    The generated club's contacts decay (lifecycle.data.decay): a message to a dead one comes
    back undelivered or bounced and marks it dead, as a real provider's webhook would. The
    reports arrive after the demo's days (the daily runs did not wait for them), and
    contact_health is built again as of the last day so the report's chart shows them.
    """
    from lifecycle.insight.simulate import provider_outcomes
    from lifecycle.transform.dbt import build

    settings = get_settings()
    events: Counter = Counter()
    for i in range((last - first).days + 1):
        events.update(provider_outcomes(url, first + timedelta(days=i), seed, settings))
    build(url, last, ["contact_health", "metrics_contact_health"], settings=settings,
          unit_tests=False)
    with psycopg.connect(url) as conn:
        dead, contacts = conn.execute(
            f'select count(*) filter (where status = \'dead\'), count(*) '
            f'from "{settings.dbt_schema}".contact_health').fetchone()
    console.print(
        f"[bold]providers[/] {events.get('delivered', 0)} delivered, "
        f"{events.get('undelivered', 0)} SMS undelivered, {events.get('bounce', 0)} emails "
        f"bounced; contact health: {dead} of {contacts} contacts dead")


@dataclass
class _Simulation:
    """`lifecycle simulate` running beside the days: its process, log and size."""

    proc: subprocess.Popen
    log: Path
    customers: int
    started: float
    niceness: int | None  # its CPU priority as the OS reports it (None: not known)


def _start_simulation(url: str, seed: int, settings: Settings, customers: int) -> _Simulation:
    """`lifecycle simulate` of ``customers`` (the demo's size, at most DEMO_SIM_CUSTOMERS) on
    the demo's server, started now."""
    exe = Path(sys.executable).parent / "lifecycle"
    cmd = [str(exe), "simulate", "--customers", str(customers), "--days",
           str(DEMO_SIM_DAYS), "--seed", str(seed), "--json"]
    log = settings.state_dir / "demo" / "simulate.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:  # the child keeps its own handle
        proc = subprocess.Popen(cmd, env={**os.environ, "LIFECYCLE_WAREHOUSE_URL": url},
                                stdout=subprocess.DEVNULL, stderr=out)
    # Below the days in the CPU's queue: the days are the demo's critical path, the
    # simulation fills the time they leave a core idle (waiting on PostgreSQL, on Airflow).
    niceness = None
    with contextlib.suppress(OSError):  # the process may be gone already: said when waited on
        own = os.getpriority(os.PRIO_PROCESS, 0)  # never above the demo's own priority
        os.setpriority(os.PRIO_PROCESS, proc.pid, max(own, SIMULATION_NICENESS))
        niceness = os.getpriority(os.PRIO_PROCESS, proc.pid)
    return _Simulation(proc, log, customers, time.monotonic(), niceness)


def _stop(sim: _Simulation) -> None:
    if sim.proc.poll() is None:
        sim.proc.kill()
        sim.proc.wait()


def _simulation_done(console: Console, sim: _Simulation, steps: _Steps) -> bool:
    """Wait for the simulation started beside the days; False (and why) if it failed."""
    rc = sim.proc.wait()
    took = time.monotonic() - sim.started
    steps.lap("waiting for the simulation")
    steps.note(f"(simulate, beside the days at nice {sim.niceness}, {took:.0f} s)")
    if rc != 0:
        console.print(f"[red]the simulation failed[/] (exit {rc}): {sim.log.read_text()[-2000:]}")
        return False
    console.print(
        f"[bold]simulate[/] AS IS (blast) vs TO BE (lifecycle): {sim.customers} customers, "
        f"{DEMO_SIM_DAYS} days ({took:.0f} s, beside the Airflow days)"
    )
    return True


def _report(console: Console, url: str, first: date, last: date, steps: _Steps) -> None:
    from lifecycle.insight.report import write_report

    report = write_report(url, first, last)
    steps.lap("report")
    h = report.headline
    t = Table(title="report headline")
    t.add_column("measure")
    t.add_column("value", justify="right")
    t.add_row("messages sent", str(h["messages"]))
    t.add_row("messages per customer", f"{h['messages_per_customer']:.3f}")
    t.add_row(f"message cost, {h['currency']}", f"{h['cost']:.2f}")
    if h["incremental_conversions"] is None:
        t.add_row("conversions added by messages (vs control)", "no control group yet")
    else:
        t.add_row(
            "conversions added by messages (vs control, 95% interval)",
            f"{h['incremental_conversions']:+.1f} ({h['incremental_conversions_low']:+.1f} to "
            f"{h['incremental_conversions_high']:+.1f}): {h['incremental_verdict']}",
        )
    if h["incremental_profit"] is not None:
        t.add_row(
            f"profit after message cost, {h['currency']} (95% interval)",
            f"{h['incremental_profit']:,.0f} ({h['incremental_profit_low']:,.0f} to "
            f"{h['incremental_profit_high']:,.0f})",
        )
    g = h["global_control"]
    if g is not None and g["difference"] is not None:
        t.add_row(
            "global control group: messaged less held back (95% interval)",
            f"{g['difference'] * 100:+.1f} pp ({g['difference_low'] * 100:+.1f} to "
            f"{g['difference_high'] * 100:+.1f}): {g['verdict']}",
        )
    if h["simulation"]:
        t.add_row("simulation", "of the report's days (generated club, not these results)")
    for policy, title in (("blast", "AS IS"), ("lifecycle", "TO BE")):
        sim = h["simulation"].get(policy)
        if sim:
            t.add_row(f"{title}: messages per customer per year",
                      f"{sim['messages_per_customer_year']:.1f}")
            t.add_row(f"{title}: cost, {h['currency']}", f"{sim['cost']:.2f}")
            t.add_row(f"{title}: conversions caused", str(sim["conversions_total"]))
            t.add_row(f"{title}: opt-outs", str(sim["opt_outs"]))
    console.print(t)
    console.print(f"[bold]report[/] {report.path}")


def _print_totals(console: Console, url: str, first: date, last: date) -> None:
    with psycopg.connect(url) as conn:
        customers = conn.execute("select count(*) from raw.customers").fetchone()[0]
        rows = conn.execute(
            "select phase, channel, status, count(*), count(distinct customer_id) from ops.outbox "
            "where plan_date between %s and %s group by 1, 2, 3",
            (first, last),
        ).fetchall()
        reached = conn.execute(
            "select count(distinct customer_id) from ops.outbox where plan_date between %s and %s",
            (first, last),
        ).fetchone()[0]
        skips = conn.execute(
            "select reason, count(*) from ops.skips where plan_date between %s and %s group by 1",
            (first, last),
        ).fetchall()
    by_phase: Counter = Counter()
    by_channel: Counter = Counter()
    by_status: Counter = Counter()
    for phase, channel, status, n, _ in rows:
        by_phase[phase] += n
        by_channel[channel] += n
        by_status[status] += n
    total = sum(by_phase.values())
    t = Table(title=f"totals {first} .. {last}")
    t.add_column("measure")
    t.add_column("value", justify="right")
    t.add_row("customers in the club", str(customers))
    t.add_row("messages", str(total))
    t.add_row("customers messaged", str(reached))
    t.add_row("messages per customer (whole base)", f"{total / max(customers, 1):.3f}")
    t.add_row("messages per messaged customer", f"{total / max(reached, 1):.3f}")
    for phase in (*PHASES_IN_ORDER, "keep_alive"):
        t.add_row(f"  {phase}", str(by_phase.get(phase, 0)))
    for channel, n in sorted(by_channel.items()):
        t.add_row(f"  via {channel}", str(n))
    for status, n in sorted(by_status.items()):
        t.add_row(f"  status {status}", str(n))
    for reason, n in sorted(skips):
        t.add_row(f"  skipped: {reason}", str(n))
    calls = call_list(url, load_rules(get_settings().rules_path), last, get_settings())
    t.add_row(f"call list of {last} (`lifecycle calls list --date {last}`)", str(len(calls)))
    console.print(t)
