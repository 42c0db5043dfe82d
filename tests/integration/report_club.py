"""What the report's integration tests share: a fresh club database, and settings whose rules
file gives offers a margin."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

from lifecycle.settings import Settings
from lifecycle.warehouse.migrations import migrate

SHIPPED_RULES = Path(__file__).resolve().parents[2] / "include" / "rules" / "phases.yml"


def settings_with_margins(tmp_path_factory: pytest.TempPathFactory,
                          margin: dict[str, float]) -> Settings:
    """Settings (a fresh home) reading a copy of the shipped rules file in which each offer
    code of ``margin`` has that margin."""
    text = SHIPPED_RULES.read_text(encoding="utf-8")
    for code, value in margin.items():
        assert f"offer: {{code: {code}," in text
        text = text.replace(f"offer: {{code: {code},",
                            f"offer: {{code: {code}, margin: {value},", 1)
    rules_file = tmp_path_factory.mktemp("rules") / "phases.yml"
    rules_file.write_text(text, encoding="utf-8")
    return Settings(home=tmp_path_factory.mktemp("state"), rules_file=rules_file)


@contextmanager
def fresh_database(server_url: str, prefix: str) -> Iterator[str]:
    """A new database on the test server with the warehouse's schema; dropped afterwards."""
    base = server_url.rsplit("/", 1)[0]
    name = prefix + uuid.uuid4().hex[:8]
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    try:
        url = f"{base}/{name}"
        migrate(url)
        yield url
    finally:
        with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
            conn.execute(f'drop database if exists "{name}" with (force)')
