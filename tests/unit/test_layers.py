"""The package's rooms import one way, as their docstrings say, and none imports Airflow."""

from __future__ import annotations

import ast
from importlib import resources
from pathlib import Path

import pytest

import lifecycle

PACKAGE = Path(resources.files(lifecycle))

# room -> the rooms (or modules) it may import; a room is a subpackage or a top-level module.
BASE = {"settings", "logs", "contacts"}
ALLOWED: dict[str, set[str]] = {
    "settings": set(),
    "logs": set(),
    "contacts": set(),
    "warehouse": {"settings"},
    "data": BASE | {"warehouse"},
    "rules": {"settings", "warehouse.facts"},
    "transform": {"settings", "warehouse", "rules"},
    "planning": BASE | {"warehouse", "rules"},
    "delivery": BASE | {"warehouse", "rules"},
    "pipeline": BASE | {"warehouse", "rules", "transform", "planning", "delivery"},
    "operations": BASE | {"warehouse", "rules", "transform", "planning", "delivery", "pipeline"},
    "calls": BASE | {"warehouse", "data", "rules", "planning", "delivery"},
    "insight": BASE
    | {"warehouse", "data", "rules", "transform", "planning", "delivery", "pipeline", "calls"},
    "airflow_env": {"settings"},
    "local_airflow": {"settings", "airflow_env", "transform"},
    "demo": BASE
    | {"airflow_env", "warehouse", "data", "rules", "transform", "planning", "insight", "calls"},
    "cli": BASE
    | {
        "warehouse", "data", "rules", "transform", "planning", "delivery", "pipeline",
        "operations", "insight", "demo", "local_airflow", "calls",
    },
}


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py"))


def _room(path: Path) -> str:
    return path.relative_to(PACKAGE).with_suffix("").parts[0]


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, dotted module) of every import in the file, function-local ones included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "lifecycle":
                found += [(node.lineno, f"lifecycle.{a.name}") for a in node.names]
            else:
                found.append((node.lineno, node.module))
    return found


def _allowed(room: str, target: str) -> bool:
    """``target`` is a dotted name below ``lifecycle``: its room, or room.module."""
    return target.split(".")[0] == room or any(
        target == ok or target.startswith(ok + ".") for ok in ALLOWED[room]
    )


def test_every_room_is_known():
    rooms = {_room(p) for p in _modules()} - {"__init__"}
    assert rooms == set(ALLOWED)


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_run_one_way(path: Path):
    room = _room(path)
    if room == "__init__":
        return
    wrong = [
        f"{path.relative_to(PACKAGE)}:{line} imports {name}"
        for line, name in _imports(path)
        if name.startswith("lifecycle.") and not _allowed(room, name.removeprefix("lifecycle."))
    ]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_airflow_in_the_package(path: Path):
    airflow = [f"{line}: {name}" for line, name in _imports(path) if name.split(".")[0] in
               ("airflow", "cosmos")]
    assert not airflow, f"{path.relative_to(PACKAGE)} imports Airflow: {airflow}"


def test_the_checks_see_a_wrong_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from lifecycle.planning.plan import Plan\nimport airflow.sdk\n")
    names = [n for _, n in _imports(bad)]
    assert names == ["lifecycle.planning.plan", "airflow.sdk"]
    assert not _allowed("rules", "planning.plan")
    assert _allowed("rules", "warehouse.facts") and not _allowed("rules", "warehouse.server")
