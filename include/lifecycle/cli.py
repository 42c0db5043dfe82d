"""``lifecycle`` command line: the same functions the DAG tasks call."""

from __future__ import annotations

import json
import sys
from datetime import date
from pathlib import Path

import click

from lifecycle.settings import get_settings


def _url() -> str:
    from lifecycle.warehouse import migrate, resolve_url

    url = resolve_url(get_settings())
    migrate(url)
    return url


class _Date(click.ParamType):
    name = "YYYY-MM-DD"

    def convert(self, value, param, ctx):
        if isinstance(value, date):
            return value
        try:
            return date.fromisoformat(value)
        except ValueError:
            self.fail(f"'{value}' is not a date like 2026-06-30", param, ctx)


DATE = _Date()


@click.group()
def main() -> None:
    """Lifecycle marketing for subscription businesses, on your own warehouse."""


# --------------------------------------------------------------------------- warehouse


@main.group()
def warehouse() -> None:
    """The warehouse: LIFECYCLE_WAREHOUSE_URL, else the embedded PostgreSQL."""


@warehouse.command("up")
def warehouse_up() -> None:
    """Start the embedded server (if no external URL is set) and create the schemas."""
    from lifecycle.warehouse import masked

    click.echo(masked(_url()))


@warehouse.command("down")
def warehouse_down() -> None:
    """Stop the embedded server."""
    from lifecycle.warehouse import embedded

    stopped = embedded(get_settings()).down()
    click.echo("stopped" if stopped else "not running")


@warehouse.command("url")
def warehouse_url() -> None:
    """Print the warehouse URL (the embedded one's password is a placeholder: trust auth)."""
    from lifecycle.warehouse import resolve_url

    click.echo(resolve_url(get_settings(), start=False))


@warehouse.command("status")
def warehouse_status() -> None:
    """Say which warehouse is used and whether it answers."""
    import psycopg

    from lifecycle.warehouse import WarehouseError, embedded, masked, resolve_url

    settings = get_settings()
    try:
        url = resolve_url(settings, start=False)
    except WarehouseError as exc:
        click.echo(f"embedded: not initialised ({exc})")
        sys.exit(1)
    kind = "external" if settings.warehouse_url else f"embedded ({settings.state_dir})"
    try:
        with psycopg.connect(url, connect_timeout=3) as conn:
            version = conn.execute("show server_version").fetchone()[0]
        click.echo(f"{kind}: up, PostgreSQL {version}, {masked(url)}")
    except psycopg.OperationalError:
        running = embedded(settings).is_running() if not settings.warehouse_url else False
        click.echo(f"{kind}: down{' (process running but not answering)' if running else ''}")
        sys.exit(1)


# --------------------------------------------------------------------------- data


@main.command()
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
def load(directory: Path) -> None:
    """Load the data contract's CSV files from DIRECTORY into raw (all or nothing)."""
    from lifecycle.loader import LoadError, load_dir

    try:
        report = load_dir(_url(), directory)
    except LoadError as exc:
        click.echo(str(exc), err=True)
        sys.exit(2)
    click.echo(str(report))


@main.command()
@click.option("--customers", type=int, default=10_000, show_default=True)
@click.option("--start", type=DATE, default="2025-01-01", show_default=True)
@click.option("--end", type=DATE, default="2026-06-30", show_default=True)
@click.option("--seed", type=int, default=42, show_default=True)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write the CSV files here",
)
@click.option(
    "--load/--no-load",
    "load_",
    default=False,
    help="Load straight into the warehouse (COPY fast path)",
)
def generate(
    customers: int, start: date, end: date, seed: int, out: Path | None, load_: bool
) -> None:
    """Generate a synthetic fitness club (deterministic by seed)."""
    from lifecycle.generator import generate as gen

    if out is None and not load_:
        raise click.UsageError("give --out DIR, --load, or both")
    report = gen(customers, start, end, seed, out_dir=out, url=_url() if load_ else None)
    click.echo(str(report))


# --------------------------------------------------------------------------- rules


@main.group()
def rules() -> None:
    """The phase rules file marketers edit."""


@rules.command("validate")
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
def rules_validate(file: Path | None) -> None:
    """Check a rules file; every error with file:line:column and what would be valid."""
    from lifecycle.rules import RulesInvalid, load_rules

    path = file or get_settings().rules_path
    try:
        parsed = load_rules(path)
    except RulesInvalid as exc:
        for err in exc.errors:
            click.echo(str(err), err=True)
        click.echo(f"{len(exc.errors)} error(s) in {path}", err=True)
        sys.exit(1)
    steps = sum(len(p.steps) for p in parsed.phases)
    click.echo(f"{path}: ok ({len(parsed.phases)} enabled phases, {steps} steps)")


# --------------------------------------------------------------------------- the day


@main.command()
@click.option("--date", "day", type=DATE, required=True)
@click.option(
    "--clock",
    type=click.Choice(["wall", "logical"]),
    default="wall",
    show_default=True,
    help="wall: send what is due now; logical: replay the day (every row of it is due)",
)
@click.option("--no-build", is_flag=True, help="Plan on the customer_facts already built for DATE")
def run(day: date, clock: str, no_build: bool) -> None:
    """Run one day: validate rules, dbt build as of DATE, plan, dispatch."""
    from lifecycle.pipeline import run_day

    result = run_day(_url(), day, clock=clock, build=not no_build)
    click.echo(
        json.dumps({"plan": result.plan.as_dict(), "dispatch": result.dispatch.as_dict()}, indent=2)
    )


@main.command()
@click.option("--date", "day", type=DATE, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array")
def outbox(day: date, as_json: bool) -> None:
    """List a planning date's messages and skips."""
    from lifecycle.pipeline import outbox_rows

    rows = outbox_rows(_url(), day)
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    for r in rows:
        extra = r.get("reason") or r.get("channel")
        click.echo(f"{r['customer_id']}\t{r['phase']}:{r['step']}\t{r['status']}\t{extra}")


@main.command()
@click.option("--customers", type=int, default=10_000, show_default=True)
@click.option("--days", type=int, default=30, show_default=True)
@click.option(
    "--start",
    type=DATE,
    default="2025-01-01",
    show_default=True,
    help="First day of the generated history",
)
@click.option(
    "--end",
    type=DATE,
    default="2026-06-30",
    show_default=True,
    help="Last day of the generated history; the demo runs the DAYS days ending here",
)
@click.option("--seed", type=int, default=42, show_default=True)
def demo(customers: int, days: int, start: date, end: date, seed: int) -> None:
    """Generate a club, then run lifecycle_daily through Airflow for DAYS consecutive days."""
    from lifecycle.demo import run_demo

    sys.exit(run_demo(customers=customers, days=days, start=start, end=end, seed=seed))


if __name__ == "__main__":
    main()
