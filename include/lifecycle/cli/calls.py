"""``lifecycle calls list|load``: the front desk's day (who to call) and what came of it."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import click

from lifecycle.cli import DATE, _load_or_exit, _loaded_or_exit, _url, main
from lifecycle.settings import get_settings


@main.group()
def calls() -> None:
    """The call channel: the day's call list and the outcomes file."""


@calls.command("list")
@click.option("--date", "day", type=DATE, required=True, help="The planning day of the calls")
@click.option("--club", default=None, help="Only this club's calls (customers' club_id)")
@click.option("--format", "fmt", type=click.Choice(["csv", "html"]), default="csv",
              show_default=True, help="csv: the file to fill in and load back; html: to print")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the list here (default: standard output)")
def calls_list(day: date, club: str | None, fmt: str, out: Path | None) -> None:
    """The calls planned for DATE still to make, the most valuable first."""
    from lifecycle.calls.listing import call_list, calls_csv, calls_html

    settings = get_settings()
    rules = _load_or_exit(settings.rules_path)
    found = call_list(_url(), rules, day, settings, club)
    text = calls_csv(found) if fmt == "csv" else calls_html(found, day, settings.currency)
    if out is None:
        click.echo(text, nl=False)
    else:
        out.write_text(text, encoding="utf-8")
    clubs = len({c.club_id for c in found})
    click.echo(f"{len(found)} calls for {day} in {clubs} club(s)"
               + (f" -> {out}" if out else ""), err=True)


@calls.command("load")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def calls_load(file: Path) -> None:
    """Load FILE of call outcomes (all or nothing; loading it again changes nothing)."""
    from lifecycle.calls.outcomes import load_outcomes

    click.echo(str(_loaded_or_exit(load_outcomes, _url(), file)))
