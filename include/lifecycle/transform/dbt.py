"""Run the project's dbt (dbt_project/) against a warehouse given by URL.

dbt runs as a subprocess, the ``dbt`` executable installed next to the running Python: its
in-process API is not thread-safe and keeps global state between invocations. The connection
reaches dbt through environment variables that dbt_project/profiles.yml reads, so the URL is the
only thing a caller (CLI, Airflow task, test) has to know.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

from lifecycle.rules.compiled import Rules
from lifecycle.rules.loading import load_rules
from lifecycle.settings import Settings, get_settings
from lifecycle.transform.dbt_vars import VAR_NAME as PHASES_VAR
from lifecycle.transform.dbt_vars import phase_vars

OUTPUT_TAIL_LINES = 60


class DbtError(RuntimeError):
    """dbt exited non-zero; the message ends with the tail of its output."""

    def __init__(self, message: str, *, returncode: int | None = None, output: str = "") -> None:
        super().__init__(message)
        self.returncode = returncode
        self.output = output


def dbt_env(url: str, settings: Settings | None = None) -> dict[str, str]:
    """Environment variables that point dbt_project/profiles.yml at the warehouse ``url``.

    Only the variables dbt needs; callers merge them into their own environment.
    """
    settings = settings or get_settings()
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres", "postgresql+psycopg", "postgresql+psycopg2"):
        raise ValueError(f"not a PostgreSQL URL (scheme {parts.scheme!r}): expected postgresql://…")
    dbname = unquote(parts.path.lstrip("/"))
    if not dbname:
        raise ValueError("the warehouse URL names no database: expected postgresql://…/<dbname>")
    query = parse_qs(parts.query)
    env = {
        "LIFECYCLE_PG_HOST": parts.hostname or "localhost",
        "LIFECYCLE_PG_PORT": str(parts.port or 5432),
        "LIFECYCLE_PG_USER": unquote(parts.username or "postgres"),
        "LIFECYCLE_PG_PASSWORD": unquote(parts.password or ""),
        "LIFECYCLE_PG_DBNAME": dbname,
        "LIFECYCLE_DBT_SCHEMA": settings.dbt_schema,
        "LIFECYCLE_DBT_THREADS": str(settings.dbt_threads),
        # dbt_project.yml defaults the club_timezone var from it, so dbt and Python agree.
        "LIFECYCLE_CLUB_TIMEZONE": settings.club_timezone,
        # and default_country_code from the club's region (UA -> 380): one phone normalisation
        "LIFECYCLE_DEFAULT_COUNTRY_CODE": settings.default_country_code,
        "DBT_PROFILES_DIR": str(settings.dbt_project_dir),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "False",
        "DO_NOT_TRACK": "1",
        "DBT_USE_COLORS": "False",
    }
    if "sslmode" in query:
        env["LIFECYCLE_PG_SSLMODE"] = query["sslmode"][-1]
    options = session_options(os.environ.get("PGOPTIONS", ""), settings)
    if options:
        env["PGOPTIONS"] = options
    return env


def session_options(pgoptions: str, settings: Settings) -> str:
    """libpq's PGOPTIONS (read by dbt's psycopg2 when it connects) with the settings of dbt's
    sessions after whatever options were given; an option given there is kept as given.

    - JIT off (``dbt_jit``): the planner's estimates for the models' CTEs run far above the
      rows they hold, past the costs where PostgreSQL JIT-compiles a query (jit_above_cost,
      jit_optimize_above_cost): on a server with JIT (most packaged ones; the embedded one has
      none) metrics_retention_monthly spent 2.0 s of its 2.1 s compiling at 10,000
      customers, and a 10k day through Airflow took 9.9 s instead of 8.3 s.
    - ``work_mem`` and ``maintenance_work_mem`` (``dbt_work_mem``,
      ``dbt_maintenance_work_mem``): the embedded server's own; at PostgreSQL's defaults a
      1M-customer build's big sorts and index builds spill to disk.
    """
    wanted = [("jit", None if settings.dbt_jit else "off"),
              ("work_mem", settings.dbt_work_mem or None),
              ("maintenance_work_mem", settings.dbt_maintenance_work_mem or None)]
    out = pgoptions.strip()
    for name, value in wanted:
        if value is not None and not re.search(rf"(?<![\w.])({name})\s*=", out):
            out = f"{out} -c {name}={value.replace(' ', '')}".strip()
    return out


def cheap_behavior_flag_source() -> None:
    """Make dbt's behaviour flags name their module without ``inspect.stack()``; idempotent.

    For a process that runs dbt in-process, invocation after invocation: Cosmos' tasks in the
    daily DAG (InvocationMode.DBT_RUNNER) and ``lifecycle simulate``. Every invocation makes a
    new adapter whose ~10 behaviour flags each find the module that declared them through
    ``inspect.stack()`` (dbt_common.behavior_flags), which reads the source of every frame and
    scans sys.modules for frames without a module: a third of a demo day's time by its tenth
    day, growing day by day. The answer, a label in a warning, is the same from the frames'
    globals, without reading any file.
    """
    from dbt_common import behavior_flags

    def source() -> str:
        frame = sys._getframe(1)
        while frame is not None:
            name = frame.f_globals.get("__name__")
            if name and name != behavior_flags.__name__:
                return name
            frame = frame.f_back
        return "Unknown"

    behavior_flags.BehaviorFlagRendered._default_source = staticmethod(source)


def before_dbt_task(context: object) -> None:
    """``pre_execute`` of the DAG's per-model Cosmos dbt tasks (the context is not used).

    Cosmos builds their profile from the Airflow connection, not from dbt_env: the session
    options (``session_options``: JIT, work_mem) are set in the task process's environment
    here."""
    cheap_behavior_flag_source()
    options = session_options(os.environ.get("PGOPTIONS", ""), get_settings())
    if options:
        os.environ["PGOPTIONS"] = options


def dbt_executable() -> Path:
    """The ``dbt`` installed beside the running interpreter (the same virtualenv)."""
    # sys.executable is not resolved: in a venv it is a symlink and its directory is the venv's.
    return Path(sys.executable).parent / "dbt"


def _with_vars(
    args: list[str], as_of: datetime.date | None, extra: dict[str, str] | None = None
) -> list[str]:
    """``args`` with as_of_date and ``extra`` merged into their ``--vars`` (added when none).

    The values given here win over the same names in ``args``.
    """
    given = {**(extra or {})}
    if as_of is not None:
        given["as_of_date"] = as_of.isoformat()
    if not given:
        return list(args)
    args = list(args)
    for i, arg in enumerate(args):
        if arg == "--vars" and i + 1 < len(args):
            merged = {**(yaml.safe_load(args[i + 1]) or {}), **given}
            args[i + 1] = json.dumps(merged)
            return args
        if arg.startswith("--vars="):
            merged = {**(yaml.safe_load(arg.split("=", 1)[1]) or {}), **given}
            args[i] = "--vars=" + json.dumps(merged)
            return args
    return [*args, "--vars", json.dumps(given)]


# dbt commands that compile no model against the warehouse: they run without the rules file's
# phases (a parse must not depend on the rules file being valid).
_NO_PHASES = frozenset({"parse", "deps", "clean", "debug", "ls", "list", "init"})


def _vars_in_args(args: list[str]) -> dict:
    """The vars already in ``args`` (``--vars X`` or ``--vars=X``), as a mapping."""
    for i, arg in enumerate(args):
        if arg == "--vars" and i + 1 < len(args):
            return yaml.safe_load(args[i + 1]) or {}
        if arg.startswith("--vars="):
            return yaml.safe_load(arg.split("=", 1)[1]) or {}
    return {}


def with_phases(
    args: list[str], settings: Settings, dbt_vars: dict[str, str] | None = None
) -> dict[str, str] | None:
    """``dbt_vars`` plus the phases of the settings' rules file when nobody passed them.

    dbt_project.yml holds no copy of the phases (docs/architecture.md #1): a run that names no
    ``lifecycle_phases`` gets the rules file in use, validated (RulesInvalid if it is broken).
    """
    if (
        not args
        or args[0] in _NO_PHASES
        or PHASES_VAR in (dbt_vars or {})
        or PHASES_VAR in _vars_in_args(args)
    ):
        return dbt_vars
    rules = load_rules(settings.rules_path, max_bytes=settings.rules_file_max_bytes)
    return {**phase_vars(rules), **(dbt_vars or {})}


def run_dbt(
    url: str,
    args: list[str],
    *,
    as_of: datetime.date | None = None,
    settings: Settings | None = None,
    target_path: Path | None = None,
    dbt_vars: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``dbt <args>`` in the dbt project against ``url``; raise DbtError unless it succeeds.

    ``as_of`` becomes the ``as_of_date`` var; ``dbt_vars`` are merged into ``--vars`` too, with
    the settings' rules file as ``lifecycle_phases`` unless given (``with_phases``).
    ``target_path`` keeps dbt's artifacts and logs apart from other runs of the same checkout
    (parallel tests, concurrent tasks).
    """
    settings = settings or get_settings()
    exe = dbt_executable()
    if not exe.exists():
        raise DbtError(f"dbt is not installed next to {sys.executable}: run `make .venv`")
    env = {**os.environ, **dbt_env(url, settings)}
    if target_path is not None:
        env["DBT_TARGET_PATH"] = str(target_path)
        env["DBT_LOG_PATH"] = str(target_path / "logs")
    cmd = [str(exe), *_with_vars(args, as_of, with_phases(args, settings, dbt_vars))]
    result = subprocess.run(
        cmd,
        cwd=settings.dbt_project_dir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        tail = "\n".join(result.stdout.splitlines()[-OUTPUT_TAIL_LINES:])
        raise DbtError(
            f"`dbt {' '.join(cmd[1:])}` failed (exit {result.returncode}); "
            f"dbt's output ends with:\n{tail}",
            returncode=result.returncode,
            output=result.stdout,
        )
    return result


def build(
    url: str,
    as_of: datetime.date,
    select: str | list[str] | None = None,
    *,
    settings: Settings | None = None,
    target_path: Path | None = None,
    rules: Rules | None = None,
    dbt_vars: dict[str, str] | None = None,
    unit_tests: bool = True,
) -> subprocess.CompletedProcess[str]:
    """``dbt build`` (seeds, models, tests, unit tests) as of ``as_of``; ``select`` narrows it.

    The phases reach dbt from the rules file (docs/architecture.md #1): ``rules`` when given,
    else the settings' rules file, loaded and validated here (RulesInvalid if it is broken).
    ``dbt_vars`` add or override other vars. Unit tests check model logic with the phases
    they pin themselves, not the day's data: ``unit_tests=False`` leaves them out, as the
    daily runs do (DAG and ``lifecycle run``).
    """
    settings = settings or get_settings()
    if rules is None:
        rules = load_rules(settings.rules_path, max_bytes=settings.rules_file_max_bytes)
    args = ["build"]
    if select:
        args += ["--select", *([select] if isinstance(select, str) else select)]
    if not unit_tests:
        args += ["--exclude-resource-type", "unit_test"]
    return run_dbt(
        url,
        args,
        as_of=as_of,
        settings=settings,
        target_path=target_path,
        dbt_vars={**phase_vars(rules), **(dbt_vars or {})},
    )


# ------------------------------------------------------------------ the manifest the DAG renders

# What a dbt parse reads: everything in the project but dbt's own outputs.
_NOT_PROJECT = {"target", "logs", "dbt_packages", "__pycache__"}


def project_fingerprint(settings: Settings | None = None) -> str:
    """A hash of every file of the dbt project (paths and contents) and of dbt's version.

    Cheap (the project is ~100 small files: a few milliseconds), so a DAG file can tell at
    every parse whether a stored manifest still describes the project.
    """
    from importlib.metadata import version

    settings = settings or get_settings()
    root = settings.dbt_project_dir
    digest = hashlib.sha256(f"dbt-core {version('dbt-core')}\n".encode())
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _NOT_PROJECT and d[0] != ".")
        for name in sorted(f for f in filenames if f[0] != "."):
            path = Path(dirpath, name)
            digest.update(str(path.relative_to(root)).encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def manifest_path(settings: Settings | None = None) -> Path:
    """Where ``write_manifest`` keeps the parsed project: the state dir, not dbt's target/
    (which every dbt run of the checkout rewrites)."""
    settings = settings or get_settings()
    return settings.state_dir / "dbt-manifest" / "manifest.json"


def fresh_manifest(settings: Settings | None = None) -> Path | None:
    """The stored manifest when it was parsed from the project as it is now, else None."""
    path = manifest_path(settings)
    try:
        stored = path.with_suffix(".sha256").read_text().strip()
    except OSError:
        return None
    return path if path.exists() and stored == project_fingerprint(settings) else None


def write_manifest(settings: Settings | None = None) -> Path:
    """``dbt parse`` the project into ``manifest_path()`` (no warehouse is dialled).

    The fingerprint is taken before the parse and written after the manifest: a project
    edited meanwhile, or a reader between the two renames, sees a mismatch, never a manifest
    with the wrong fingerprint.
    """
    settings = settings or get_settings()
    path = manifest_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    fingerprint = project_fingerprint(settings)
    with tempfile.TemporaryDirectory(prefix="parse-", dir=path.parent) as tmp:
        # parse needs a profile, not a connection: any well-formed URL does
        run_dbt("postgresql://parse@127.0.0.1/parse", ["parse", "--no-partial-parse"],
                settings=settings, target_path=Path(tmp))
        os.replace(Path(tmp) / "manifest.json", path)
        side = Path(tmp) / "manifest.sha256"
        side.write_text(fingerprint + "\n")
        os.replace(side, path.with_suffix(".sha256"))
    return path


def ensure_manifest(settings: Settings | None = None) -> Path:
    """The fresh manifest, parsed now if the stored one is missing or stale."""
    return fresh_manifest(settings) or write_manifest(settings)
