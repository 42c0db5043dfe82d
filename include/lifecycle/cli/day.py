"""``lifecycle build|run|volume|outbox``: one day's commands, talking to a person (a summary,
progress on stderr) or, with ``--json``, to a script."""

from __future__ import annotations

import json
import sys
from datetime import date

import click

from lifecycle.cli import DATE, _planning_or_exit, _url, main


def _loaded_or_exit(url: str) -> None:
    """Exit 2 saying what to run when the warehouse holds no club (nothing to build or plan)."""
    from lifecycle.pipeline import customers_loaded
    from lifecycle.warehouse.server import masked

    if not customers_loaded(url):
        click.echo(
            f"nothing loaded in the warehouse {masked(url)}: raw.customers is empty. Load the "
            "club's files (`lifecycle load DIR`), generate a club (`lifecycle generate --load`) "
            "or run the demo (`lifecycle demo`) first",
            err=True,
        )
        sys.exit(2)


def _steps(quiet: bool):
    """A run_day ``step``: a spinner with the elapsed time while a step runs, then one line."""
    import time
    from contextlib import contextmanager, nullcontext

    from rich.console import Console

    console = Console(stderr=True)

    @contextmanager
    def step(description: str):
        if quiet:
            with nullcontext():
                yield
            return
        t0 = time.monotonic()
        with console.status(f"{description} ..."):
            yield
        console.print(f"[green]done[/] {description} ({time.monotonic() - t0:.1f} s)")

    return step


@main.command()
@click.option("--date", "day", type=DATE, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (no progress on stderr)")
def build(day: date, as_json: bool) -> None:
    """Build dbt as of DATE (customer_facts and its tests): what `lifecycle run` does first.

    Plans nothing and sends nothing; `lifecycle preview --date DATE` reads what it built.
    """
    from lifecycle.pipeline import build_day

    url = _url()
    _loaded_or_exit(url)
    with _steps(as_json)(f"dbt build as of {day}"):
        build_day(url, day)
    if as_json:
        click.echo(json.dumps({"built": day.isoformat()}))
    else:
        click.echo(f"customer_facts built as of {day}; next: `lifecycle preview --date {day}`")


@main.command()
@click.option("--date", "day", type=DATE, required=True)
@click.option(
    "--clock",
    type=click.Choice(["wall", "logical"]),
    default="wall",
    show_default=True,
    help="wall: send what is due now, and a day whose send window has passed is built but not "
    "planned (as the DAG's catch-up); logical: replay the day (every row of it is due)",
)
@click.option("--no-build", is_flag=True, help="Plan on the customer_facts already built for DATE")
@click.option(
    "--allow-volume",
    is_flag=True,
    help="An intended big send: record a volume guard override for DATE first",
)
@click.option("--json", "as_json", is_flag=True, help="Print the plan and dispatch reports as JSON")
def run(day: date, clock: str, no_build: bool, allow_volume: bool, as_json: bool) -> None:
    """Run one day: validate rules, dbt build as of DATE, plan, dispatch."""
    from lifecycle.pipeline import day_by_phase, run_day
    from lifecycle.planning.outbox import allow_volume as record_override
    from lifecycle.warehouse.server import masked

    url = _url()
    _loaded_or_exit(url)
    if allow_volume:
        record_override(url, day, "lifecycle run --allow-volume")
    if not as_json:
        click.echo(f"lifecycle run {day} ({clock} clock) on {masked(url)}", err=True)
    result = _planning_or_exit(
        run_day, url, day, clock=clock, build=not no_build, step=_steps(as_json)
    )
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=2))
        return
    if result.not_planned:
        click.echo(f"{day}: built, not planned: {result.not_planned}.")
        click.echo(
            f"To replay the day in the sandbox: `lifecycle run --date {day} --clock logical`"
        )
        return
    _print_day(day, result, day_by_phase(url, day))


def _print_day(day: date, result, by_phase: dict) -> None:
    plan = result.plan.as_dict()
    eligible: dict[str, int] = {}
    for key, n in plan["eligible"].items():
        eligible[key.split(":")[0]] = eligible.get(key.split(":")[0], 0) + n
    planned: dict[str, int] = {}
    for key, n in plan["planned"].items():
        planned[key.split(":")[0]] = planned.get(key.split(":")[0], 0) + n
    click.echo(f"{day}: the day's outbox by phase (eligible and planned: this run)")
    click.echo(f"{'phase':<13}{'eligible':>9}{'planned':>9}{'sent':>7}  skipped by reason")
    for name in sorted(set(eligible) | set(by_phase), key=_phase_order):
        p = by_phase.get(name, {"status": {}, "skipped": {}})
        skipped = ", ".join(f"{r} {n}" for r, n in p["skipped"].items()) or "-"
        click.echo(f"{name:<13}{eligible.get(name, 0):>9}{planned.get(name, 0):>9}"
                   f"{p['status'].get('sent', 0):>7}  {skipped}")
    d = result.dispatch.as_dict()
    outcomes = ", ".join(f"{k} {v}" for k, v in sorted(d["outcomes"].items())) or "none"
    click.echo(f"planned {plan['inserted_messages']} message(s), {plan['inserted_skips']} skip(s); "
               f"dispatch claimed {d['claimed']}: {outcomes}; expired {d['expired']}")
    if plan["volume"] and plan["volume"]["tripped"]:
        click.echo(f"volume guard tripped: {plan['volume']['reason']}")
    click.echo(f"rows: `lifecycle outbox --date {day}`")


def _phase_order(name: str) -> tuple[int, str]:
    from lifecycle.planning.plan import PHASES_IN_ORDER

    order = list(PHASES_IN_ORDER)
    return (order.index(name) if name in order else len(order), name)


@main.group()
def volume() -> None:
    """The daily volume guard (policy.volume_guard in the rules file)."""


@volume.command("allow")
@click.option("--date", "day", type=DATE, required=True)
@click.option("--reason", required=True, help="Why this day's volume is intended")
def volume_allow(day: date, reason: str) -> None:
    """Let DATE exceed the volume guard (then run its plan again)."""
    from lifecycle.planning.outbox import allow_volume

    allow_volume(_url(), day, reason)
    click.echo(f"{day}: volume guard override recorded; run the day's plan again")


@main.command()
@click.option("--date", "day", type=DATE, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array")
def outbox(day: date, as_json: bool) -> None:
    """List a planning date's messages and skips."""
    from lifecycle.pipeline import last_planned_day, outbox_rows, plan_runs
    from lifecycle.warehouse.server import masked

    url = _url()
    rows = outbox_rows(url, day)
    if not rows:
        runs = plan_runs(url, day)
        if not any(status == "ok" for _, status, _ in runs):
            skipped = [s.get("reason") for _, status, s in runs if status == "skipped"]
            why = f"not planned: {skipped[-1]}" if skipped else "never planned"
            last = last_planned_day(url)
            latest = (f"the latest day planned here is {last}" if last else
                      "no day was ever planned here (`lifecycle demo` plans 30 days)")
            click.echo(
                f"{day} was {why} in the warehouse {masked(url)}; {latest}. Plan it with "
                f"`lifecycle run --date {day}` (a past day: add `--clock logical` to replay it)",
                err=True,
            )
            sys.exit(1)
        if not as_json:
            click.echo(f"{day} was planned: no message and no skip", err=True)
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    for r in rows:
        extra = r.get("reason") or r.get("channel")
        if r.get("reason") and r.get("channel"):  # control: the channel it would have gone on
            extra = f"{r['reason']} (would have gone: {r['channel']})"
        if r.get("offer_code"):
            extra += f"\t{r['offer_code']}" + (
                f" ({r['offer_source']})" if r.get("offer_source") else ""
            )
        click.echo(f"{r['customer_id']}\t{r['phase']}:{r['step']}\t{r['status']}\t{extra}")
