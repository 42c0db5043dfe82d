"""docker-compose.yaml, Dockerfile and .dockerignore: a stack a team could start.

No Docker engine runs where this project is developed, so `docker compose config` cannot check
the file; these tests read it as data instead: valid against the Compose Specification's JSON
Schema (as the check-jsonschema package ships it, with its licence), secrets without defaults,
the database not published, healthchecks and restart policies, logs and reports on volumes, the
settings it passes known to the package, and the build context free of local state.
"""

from __future__ import annotations

import json
import re
import subprocess
from importlib import resources
from pathlib import Path

import jsonschema
import pytest
import yaml

from lifecycle.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yaml"
SECRETS = ("POSTGRES_PASSWORD", "AIRFLOW_DB_PASSWORD", "LIFECYCLE_DB_PASSWORD",
           "AIRFLOW_JWT_SECRET", "AIRFLOW_API_SECRET_KEY", "AIRFLOW_FERNET_KEY")
# Airflow's settings that hold a secret: each must come from a required variable.
SECRET_SETTINGS = ("AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__API__SECRET_KEY",
                   "AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
                   "AIRFLOW__CELERY__RESULT_BACKEND", "AIRFLOW_CONN_LIFECYCLE_WAREHOUSE",
                   "LIFECYCLE_WAREHOUSE_URL")
ONE_SHOT = "airflow-init"


def _compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())  # merge keys (<<: *airflow) resolved


def _airflow_services(doc: dict) -> dict[str, dict]:
    return {name: svc for name, svc in doc["services"].items()
            if svc.get("image", "").startswith("lifecycle-airflow")}


class Missing(ValueError):
    pass


_VAR = re.compile(r"\$(?:\$|\{(?P<braced>[^}]*)\}|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))")


def interpolate(text: str, env: dict[str, str]) -> str:
    """The Compose Specification's interpolation: ${V}, ${V:-d}, ${V-d}, ${V:?e}, ${V?e},
    ${V:+a}, $V and $$ (a literal $); a required variable unset raises ``Missing``."""

    def one(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        if m.group("plain"):
            return env.get(m.group("plain"), "")
        expr = m.group("braced")
        name, op, arg = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)(:?[-?+]|)(.*)", expr,
                                     re.S).groups()
        value = env.get(name)
        if op in (":?", "?") and (value is None or (op == ":?" and value == "")):
            raise Missing(f"{name}: {arg}")
        if op == ":-":
            return value if value else arg
        if op == "-":
            return arg if value is None else value
        if op == ":+":
            return arg if value else ""
        return value or ""

    return _VAR.sub(one, text)


def test_the_compose_file_is_valid_against_the_compose_specification():
    schema_text = (resources.files("check_jsonschema.builtin_schemas.vendor")
                   .joinpath("compose-spec.json").read_text())
    schema = json.loads(schema_text)
    validator_cls = jsonschema.validators.validator_for(schema)
    validator_cls.check_schema(schema)
    validator = validator_cls(schema)
    doc = _compose()
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
              for e in validator.iter_errors(doc)]
    assert errors == []
    # the schema is live: a misspelt key is refused
    doc["services"]["airflow-scheduler"]["healthchek"] = doc["services"]["airflow-scheduler"].pop(
        "healthcheck")
    assert not validator.is_valid(doc)


def test_secrets_are_required_and_have_no_default():
    text = COMPOSE.read_text()
    for name in SECRETS:
        uses = re.findall(r"\$\{?" + name + r"\b([^}]{0,2})", text)
        assert uses, f"{name} is not used in {COMPOSE.name}"
        assert all(u.startswith(":?") for u in uses), (name, uses)
    env = {name: f"secret-{i}" for i, name in enumerate(SECRETS)}
    env["LIFECYCLE_DAILY_START_DATE"] = "2026-12-06"
    for name in SECRETS:
        with pytest.raises(Missing, match=rf"^{name}: set {name}"):
            interpolate(text, {k: v for k, v in env.items() if k != name})
    # With every secret set, each secret setting holds one of them, never a literal.
    doc = yaml.safe_load(interpolate(text, env))
    raw = _compose()
    for svc_name, svc in _airflow_services(doc).items():
        for key in SECRET_SETTINGS:
            value = svc["environment"][key]
            assert any(s in value for s in env.values()), (svc_name, key, value)
            assert "${" in raw["services"][svc_name]["environment"][key]
    postgres = doc["services"]["postgres"]["environment"]
    assert postgres["POSTGRES_PASSWORD"] == env["POSTGRES_PASSWORD"]
    # URLs carry the database passwords (hex, as the file's header says to generate them).
    urls = [v for s in _airflow_services(doc).values() for v in s["environment"].values()
            if "@postgres:" in str(v)]
    assert urls and all(re.search(r":secret-\d@postgres:", u) for u in urls), urls


def test_the_database_is_not_published():
    for name, svc in _compose()["services"].items():
        for port in svc.get("ports", []):
            target = port["target"] if isinstance(port, dict) else str(port).split(":")[-1]
            assert str(target).split("/")[0] != "5432", (name, port)
    # the opt-in is written next to it, commented, on the loopback only
    assert '# ports: ["127.0.0.1:5432:5432"]' in COMPOSE.read_text()


def test_airflow_services_have_healthchecks_restart_policies_and_start_in_order():
    doc = _compose()
    services = _airflow_services(doc)
    assert {"airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
            "airflow-triggerer", "airflow-worker", ONE_SHOT} <= set(services)
    assert services[ONE_SHOT]["restart"] == "no"
    for name, svc in services.items():
        assert svc["depends_on"]["postgres"] == {"condition": "service_healthy"}, name
        if name == ONE_SHOT:
            continue
        assert svc["restart"] in ("always", "unless-stopped"), name
        check = svc["healthcheck"]
        assert check["test"][0] in ("CMD", "CMD-SHELL") and check["retries"] >= 1, name
        assert svc["depends_on"][ONE_SHOT] == {"condition": "service_completed_successfully"}
    for name in ("airflow-scheduler", "airflow-worker"):  # their tasks call the execution API
        assert services[name]["depends_on"]["airflow-apiserver"] == {
            "condition": "service_healthy"}
    assert services["airflow-scheduler"]["environment"][
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK"] == "true"  # serves :8974/health
    for name in ("postgres", "redis"):
        assert doc["services"][name]["healthcheck"] and doc["services"][name]["restart"]


def test_logs_and_reports_are_on_named_volumes(monkeypatch):
    doc = _compose()
    for name, svc in _airflow_services(doc).items():
        mounts = dict(reversed(v.split(":")[:2]) for v in svc["volumes"])
        reports = svc["environment"]["LIFECYCLE_REPORTS_DIR"]
        monkeypatch.setenv("LIFECYCLE_REPORTS_DIR", reports)
        assert Settings().reports_path == Path(reports)  # where the report task writes
        for target in ("/opt/airflow/logs", reports):
            assert mounts.get(target) in doc["volumes"], (name, target, mounts)


def test_every_lifecycle_setting_the_stack_passes_is_one_the_package_reads():
    fields = {f"LIFECYCLE_{name.upper()}" for name in Settings.model_fields}
    for name, svc in _airflow_services(_compose()).items():
        passed = {k for k in svc["environment"] if k.startswith("LIFECYCLE_")}
        assert passed - fields == set(), name
        assert {"LIFECYCLE_DAILY_START_DATE", "LIFECYCLE_DAILY_CATCHUP_DAYS"} <= passed


def test_the_services_and_profiles_the_docs_name_exist():
    docs = (ROOT / "docs" / "operations.md").read_text() + "\n## "
    section = re.search(r"^## Running the compose stack\n(.*?)(?=^## )", docs, re.S | re.M)
    assert section, "docs/operations.md has no section 'Running the compose stack'"
    text = section.group(1)
    doc = _compose()
    commands = {" ".join(s["command"]) if isinstance(s["command"], list) else s["command"]
                for s in doc["services"].values() if "command" in s}
    for component in ("api-server", "scheduler", "dag-processor", "triggerer"):
        assert component in text and component in commands, component
    scaled = re.findall(r"--scale ([\w.-]+)=", text)
    profiles = re.findall(r"--profile ([\w.-]+)", text)
    assert scaled and profiles
    assert set(scaled) <= set(doc["services"])
    assert set(profiles) <= {p for s in doc["services"].values() for p in s.get("profiles", [])}


def _ignore_patterns() -> list[re.Pattern]:
    patterns = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        assert not line.startswith("!"), "exceptions are not modelled here"
        rx = re.escape(line.strip("/")).replace(r"\*\*/", "(?:.*/)?").replace(r"\*", "[^/]*")
        patterns.append(re.compile(rx.replace(r"\?", "[^/]").replace(r"\[cod\]", "[cod]")))
    return patterns


def _ignored(path: str, patterns: list[re.Pattern]) -> bool:
    """Docker's rule: a path is left out if it or any directory above it matches a pattern."""
    parts = path.split("/")
    return any(p.fullmatch("/".join(parts[:i])) for p in patterns
               for i in range(1, len(parts) + 1))


def test_the_build_context_leaves_out_local_state_but_not_what_the_image_needs():
    patterns = _ignore_patterns()
    for local in (".venv/bin/python", ".lifecycle/warehouse/pgdata/PG_VERSION", ".git/HEAD",
                  ".env", "dbt_project/target/manifest.json", "dbt_project/logs/dbt.log",
                  "include/lifecycle/__pycache__/settings.cpython-311.pyc", "out/report.html",
                  "include/lifecycle_marketing.egg-info/PKG-INFO", ".pytest_cache/README.md"):
        assert _ignored(local, patterns), local
    copied = re.findall(r"^COPY (?:--\S+ )*(.+) \S+$", (ROOT / "Dockerfile").read_text(), re.M)
    explicit = [f for line in copied for f in line.split() if f != "."]
    assert {"requirements.lock", "pyproject.toml", "README.md"} <= set(explicit)
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    needed = explicit + [f for f in tracked
                         if f.split("/")[0] in ("include", "dags", "plugins", "dbt_project")]
    assert len(needed) > 50
    assert [f for f in needed if _ignored(f, patterns)] == []
