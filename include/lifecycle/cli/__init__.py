"""``lifecycle`` command line: the same functions the DAG tasks call."""

from __future__ import annotations

import json
import sys
from datetime import date
from pathlib import Path

import click

from lifecycle.settings import get_settings


def _url() -> str:
    from lifecycle.warehouse.migrations import migrate
    from lifecycle.warehouse.server import resolve_url

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
    from lifecycle.warehouse.server import masked

    click.echo(masked(_url()))


@warehouse.command("down")
def warehouse_down() -> None:
    """Stop the embedded server."""
    from lifecycle.warehouse.server import embedded

    stopped = embedded(get_settings()).down()
    click.echo("stopped" if stopped else "not running")


@warehouse.command("url")
def warehouse_url() -> None:
    """Print the warehouse URL (the embedded one's password is a placeholder: trust auth)."""
    from lifecycle.warehouse.server import resolve_url

    click.echo(resolve_url(get_settings(), start=False))


@warehouse.command("status")
def warehouse_status() -> None:
    """Say which warehouse is used and whether it answers."""
    import psycopg

    from lifecycle.warehouse.server import WarehouseError, embedded, masked, resolve_url

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


@main.command("dbt-manifest")
def dbt_manifest() -> None:
    """Parse the dbt project into the manifest the daily DAG renders its dbt tasks from.

    Run it when deploying a change to dbt_project/ (the image build does; the daily run's
    prepare_warehouse does it too when the project changed). Without a manifest that matches
    the project's files the DAG still works, rendering with `dbt ls` at every parse (slow).
    """
    from lifecycle.transform.dbt import DbtError, ensure_manifest

    try:
        click.echo(str(ensure_manifest()))
    except DbtError as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)


# --------------------------------------------------------------------------- data


@main.command()
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
def load(directory: Path) -> None:
    """Load the data contract's CSV files from DIRECTORY into raw (all or nothing)."""
    from lifecycle.data.loader import load_dir

    click.echo(str(_loaded_or_exit(load_dir, _url(), directory)))


def _loaded_or_exit(load, *args):
    """``load(*args)``'s report; a rejected load's errors on stderr and exit 2."""
    from lifecycle.data.loader import LoadError

    try:
        return load(*args)
    except LoadError as exc:
        click.echo(str(exc), err=True)
        sys.exit(2)


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
    from lifecycle.data.generator import generate as gen

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
@click.option("--json", "as_json", is_flag=True, help="Print the errors as a JSON array")
def rules_validate(file: Path | None, as_json: bool) -> None:
    """Check a rules file; every error with file:line:column and what would be valid."""
    from lifecycle.rules.errors import RulesInvalid
    from lifecycle.rules.loading import load_rules

    path = file or get_settings().rules_path
    try:
        parsed = load_rules(path)
    except RulesInvalid as exc:
        if as_json:
            click.echo(json.dumps([e.as_dict() for e in exc.errors], indent=1, ensure_ascii=False))
        else:
            for err in exc.errors:
                click.echo(str(err), err=True)
            click.echo(f"{len(exc.errors)} error(s) in {path}", err=True)
        sys.exit(1)
    steps = sum(len(p.steps) for p in parsed.phases)
    repeated = sum(s.repeats is not None for p in parsed.phases for s in p.steps)
    if as_json:
        click.echo("[]")
    else:
        also = f", {repeated} of them repetitions" if repeated else ""
        click.echo(f"{path}: ok ({len(parsed.phases)} enabled phases, {steps} steps{also})")


@rules.command("schema")
def rules_schema() -> None:
    """Print the JSON Schema of the rules file (for editors; kept in phases.schema.json)."""
    from lifecycle.rules.schema import rules_json_schema_text

    click.echo(rules_json_schema_text(), nl=False)


def _load_or_exit(path: Path):
    from lifecycle.rules.errors import RulesInvalid
    from lifecycle.rules.loading import load_rules

    try:
        return load_rules(path)
    except RulesInvalid as exc:
        for err in exc.errors:
            click.echo(str(err), err=True)
        click.echo(f"{len(exc.errors)} error(s) in {path}: fix them first", err=True)
        sys.exit(1)


def _facts_or_exit(url: str, facts_as_of: date | None, day: date) -> None:
    """Exit 2 saying what to run when customer_facts holds nobody (nothing loaded or built)."""
    from lifecycle.warehouse.server import masked

    if facts_as_of is None:
        click.echo(
            f"customer_facts is empty in the warehouse {masked(url)}: nothing to compare or "
            f"preview. Build it for the day (`lifecycle build --date {day}`); if nothing is "
            "loaded yet, load the club first (`lifecycle load DIR`, `lifecycle generate --load` "
            "or `lifecycle demo`)",
            err=True,
        )
        sys.exit(2)


def _planning_or_exit(fn, *args, **kwargs):
    from lifecycle.planning.plan import PlanningError

    try:
        return fn(*args, **kwargs)
    except PlanningError as exc:
        click.echo(str(exc), err=True)
        sys.exit(2)


@rules.command("diff")
@click.argument("old", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("new", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--date", "day", type=DATE, required=True, help="customer_facts must be built for it")
@click.option("--json", "as_json", is_flag=True)
@click.option("--samples", type=int, default=5, show_default=True, help="Customer ids shown")
def rules_diff(old: Path, new: Path, day: date, as_json: bool, samples: int) -> None:
    """How each phase step's audience changes from OLD to NEW rules on DATE (writes nothing)."""
    from lifecycle.planning.preview import diff

    url = _url()
    result = _planning_or_exit(
        diff, url, _load_or_exit(old), _load_or_exit(new), day, samples=samples
    )
    _facts_or_exit(url, result.facts_as_of, day)
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=1, ensure_ascii=False))
        return
    click.echo(f"{old} -> {new} on customer_facts as of {result.facts_as_of}")
    click.echo(f"{'phase:step':<16}{'old':>8}{'new':>8}{'added':>8}{'removed':>9}")
    for s in result.steps:
        fmt = "-" if s.old is None else str(s.old)
        fnew = "-" if s.new is None else str(s.new)
        click.echo(
            f"{s.phase + ':' + str(s.step):<16}{fmt:>8}{fnew:>8}{'+' + str(s.added):>8}"
            f"{'-' + str(s.removed):>9}"
        )
        if s.added_sample:
            click.echo(f"    added e.g.   {', '.join(s.added_sample)}")
        if s.removed_sample:
            click.echo(f"    removed e.g. {', '.join(s.removed_sample)}")
    click.echo("messages after arbitration (old -> new):")
    for phase in sorted(set(result.planned_old) | set(result.planned_new)):
        click.echo(
            f"  {phase:<14}{result.planned_old.get(phase, 0):>6} -> "
            f"{result.planned_new.get(phase, 0)}"
        )
    if not result.changed:
        click.echo("no audience changes")


@main.command()
@click.option("--date", "day", type=DATE, required=True, help="customer_facts must be built for it")
@click.option(
    "--rules",
    "rules_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="A rules file to try (default: LIFECYCLE_RULES_FILE / include/rules/phases.yml)",
)
@click.option("--json", "as_json", is_flag=True)
@click.option("--samples", type=int, default=3, show_default=True, help="Per phase/channel/variant")
def preview(day: date, rules_file: Path | None, as_json: bool, samples: int) -> None:
    """What planning DATE would do with these rules: counts, skips, samples. Writes nothing."""
    from lifecycle.planning.preview import preview as run_preview

    path = rules_file or get_settings().rules_path
    url = _url()
    result = _planning_or_exit(run_preview, url, _load_or_exit(path), day, samples=samples)
    _facts_or_exit(url, result.facts_as_of, day)
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=1, ensure_ascii=False))
        return
    click.echo(
        f"Preview of {day} with {result.rules_file} ({result.rules_fingerprint}); "
        f"customer_facts built as of {result.facts_as_of}, {result.facts_rows} customers. "
        "Nothing is written or sent."
    )
    click.echo(f"{'phase':<13}{'prio':>5}{'eligible':>10}{'planned':>9}  channels / variants")
    for p in result.phases:
        chans = " ".join(f"{c}={n}" for c, n in p.by_channel.items()) or "-"
        variants = " ".join(f"{v}={n}" for v, n in p.by_variant.items())
        click.echo(
            f"{p.name:<13}{p.priority:>5}{p.eligible:>10}{p.planned:>9}  {chans}  {variants}"
        )
        if len(p.eligible_by_step) > 1:
            click.echo("      eligible by step: " + ", ".join(
                f"{p.repetitions.get(n, f'step {n}')} {count}"
                for n, count in p.eligible_by_step.items()
            ))
        if p.by_offer:
            click.echo("      offers: " + ", ".join(f"{o} {n}" for o, n in p.by_offer.items()))
        if p.already_planned:
            click.echo(f"      in the outbox already: {p.already_planned}")
        if p.control:
            held = " ".join(f"{c}={n}" for c, n in p.control.items())
            click.echo(f"      control group, held back (would have gone): {held}")
        if p.skipped:
            click.echo("      skipped: " + ", ".join(f"{r} {n}" for r, n in p.skipped.items()))
    click.echo(f"total planned: {result.planned}; skipped: {sum(result.skipped.values())}")
    click.echo("send window: " + result.send_window)
    v = result.volume
    history = (
        f"median {v['median']:g} a day over {v['history_days']} earlier day(s)"
        if v["median"] is not None
        else "no earlier days"
    )
    limit = f", ratio limit {v['ratio_limit']:g}" if v["ratio_limit"] is not None else ""
    click.echo(
        f"volume guard: {'WOULD TRIP' if v['tripped'] else 'ok'} ({v['reason']}; "
        f"max {v['max_messages']}, {history}{limit})"
    )
    for note in result.notes:
        click.echo("note: " + note)
    for p in result.phases:
        for s in p.samples:
            extra = (
                f" [{s.sms['encoding']}, {s.sms['length']} chars, {s.sms['segments']} segment(s)]"
                if s.sms
                else ""
            )
            offer = f", offer {s.offer_code}" + (f" ({s.offer_source})" if s.offer_source else "")
            click.echo(
                f"\n--- {s.phase}:{s.step} {s.channel} variant {s.variant}{offer} to {s.to}"
                f"{extra}, due {s.send_at_local} local"
            )
            if s.subject:
                click.echo(f"Subject: {s.subject}")
            click.echo(s.body)


# --------------------------------------------------------------------------- the day


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON")
def reconcile(as_json: bool) -> None:
    """Resolve 'unknown' outbox rows from provider events; list what stays unresolved."""
    from datetime import UTC, datetime

    from lifecycle.delivery.reconcile import reconcile as run_reconcile

    report = run_reconcile(_url(), now=datetime.now(UTC))
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=1))
        return
    click.echo(f"sent: {report.sent}, expired: {report.expired}, "
               f"still unknown: {len(report.unresolved)}")
    for u in report.unresolved:
        click.echo(f"  outbox {u.outbox_id}\t{u.channel}\tunknown since {u.unknown_since:%F %T%z}"
                   f"\texpires {u.expires_at:%F %T%z}")
    if report.expired_but_seen:
        click.echo("expired, but a provider event later showed them sent: "
                   + ", ".join(map(str, report.expired_but_seen)))


@main.group()
def webhooks() -> None:
    """The provider webhook receiver (also mounted by Airflow's api-server at /lifecycle)."""


@webhooks.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8766, show_default=True)
def webhooks_serve(host: str, port: int) -> None:
    """Serve /lifecycle/sendgrid/events, /lifecycle/twilio/status and /lifecycle/twilio/inbound."""
    from lifecycle.delivery.webhooks import serve

    serve(host, port, url=_url())


@main.command()
@click.option("--customers", type=int, default=10_000, show_default=True)
@click.option("--days", type=int, default=365, show_default=True)
@click.option(
    "--policy",
    type=click.Choice(["lifecycle", "blast", "both"]),
    default="both",
    show_default=True,
    help="lifecycle = the rules file (TO BE), blast = 3-6 SMS a month to every member (AS IS)",
)
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--first-day", type=DATE, default="2026-01-01", show_default=True)
@click.option(
    "--model",
    "model_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="YAML of response rates over the shipped defaults "
    "(include/lifecycle/insight/responses.yml: every key, with the figure it comes from)",
)
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON")
def simulate(
    customers: int,
    days: int,
    policy: str,
    seed: int,
    first_day: date,
    model_file: Path | None,
    as_json: bool,
) -> None:
    """Live a generated club for DAYS days under each policy; store the results for the report."""
    from lifecycle.insight.responses import ModelInvalid, load_response_model
    from lifecycle.insight.simulate import POLICIES
    from lifecycle.insight.simulate import simulate as run_simulation

    try:
        model = load_response_model(model_file)
    except ModelInvalid as exc:
        for err in exc.errors:
            click.echo(str(err), err=True)
        click.echo(f"{len(exc.errors)} error(s) in {model_file}", err=True)
        sys.exit(1)

    policies = POLICIES if policy == "both" else (policy,)
    progress = None
    if not as_json:
        def progress(pol: str, day: date, n: int) -> None:
            if n % 30 == 0 or n == days:
                click.echo(f"{pol}: {day} ({n}/{days} days)", err=True)

    run = run_simulation(
        _url(), customers=customers, days=days, policies=policies, seed=seed,
        first_day=first_day, model=model, progress=progress,
    )
    if as_json:
        click.echo(json.dumps(run, indent=2))
        return
    pols = run["policies"]
    keys = [
        "messages", "messages_per_customer_year", "sms", "email", "sms_cost", "email_cost",
        "cost", "opt_outs", "conversions_total", "revenue_total", "seconds",
    ]
    click.echo(f"simulation #{run['simulation_id']}: {customers} customers, {days} days, "
               f"seed {seed} (costs in {run['currency']})")
    click.echo(f"{'measure':32}" + "".join(f"{p:>16}" for p in pols))
    for key in keys:
        click.echo(f"{key:32}" + "".join(f"{pols[p][key]:>16}" for p in pols))
    for phase in ("activation", "stimulation", "cross_sell", "retention", "return"):
        click.echo(f"{'conversions ' + phase:32}" + "".join(
            f"{pols[p]['conversions'][phase]:>16}" for p in pols))


@main.command()
@click.option("--from", "first", type=DATE, required=True)
@click.option("--to", "last", type=DATE, required=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="HTML file to write")
def report(first: date, last: date, out: Path | None) -> None:
    """Write the self-contained HTML report of FROM..TO (default: the reports dir)."""
    from lifecycle.insight.report import write_report

    result = write_report(_url(), first, last, out)
    click.echo(str(result.path))
    click.echo(json.dumps(result.headline, default=str))


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
@click.option(
    "--replace",
    is_flag=True,
    help="Wipe the warehouse's database even if it holds data the demo did not make",
)
def demo(customers: int, days: int, start: date, end: date, seed: int, replace: bool) -> None:
    """Generate a club, then run lifecycle_daily through Airflow for DAYS consecutive days.

    The club goes into the warehouse's own database (replaced on each demo; one holding other
    data is refused without --replace), so every other command and `lifecycle airflow` see it.
    """
    from lifecycle.demo import run_demo

    sys.exit(run_demo(customers=customers, days=days, start=start, end=end, seed=seed,
                      replace=replace))


@main.command("airflow")
@click.option("--port", type=int, default=8080, show_default=True, help="Port of the UI")
def airflow_ui(port: int) -> None:
    """Start the local Airflow UI (api-server, scheduler, dag-processor, triggerer) on the
    metadata the demo's runs are in; print its URL and login; Ctrl-C stops it."""
    from lifecycle.local_airflow import LocalAirflowError, serve

    try:
        sys.exit(serve(_url(), port=port, say=lambda line: click.echo(line)))
    except LocalAirflowError as exc:
        click.echo(str(exc), err=True)
        sys.exit(2)


# The day's commands (build, run, volume, outbox) and the call list's live in their own modules.
from lifecycle.cli import calls as _calls  # noqa: E402,F401 - registers its commands on main
from lifecycle.cli import day as _day  # noqa: E402,F401 - registers its commands on main

if __name__ == "__main__":
    main()
