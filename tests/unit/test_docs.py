"""The docs stay true: their commands parse with the real CLI, their links and anchors resolve,
nothing points outside the repository, and the CLI reference is what the CLI generates."""

from __future__ import annotations

import importlib.util
import itertools
import re
from pathlib import Path

import click
import pytest

from lifecycle.cli import main as cli_main

PROJECT = Path(__file__).resolve().parents[2]
DOCS = [PROJECT / "README.md", *sorted((PROJECT / "docs").glob("*.md"))]
CLI_PAGE = PROJECT / "docs" / "cli.md"
RULES = PROJECT / "include" / "rules" / "phases.yml"

# Commands the tour names that another change adds to the CLI. Skipped only while the CLI lacks
# them: once they exist, their lines are parsed like every other.

# Placeholders in synopsis lines (`--date D`, `FILE`), replaced with values that parse.
PLACEHOLDERS = {
    "D": "2026-06-30", "D1": "2026-06-01", "D2": "2026-06-30", "YYYY-MM-DD": "2026-06-30",
    "N": "3", "S": "42", "P": "8766", "H": "127.0.0.1",
    "FILE": str(RULES), "OLD": str(RULES), "NEW": str(RULES), "DIR": str(PROJECT / "include"),
}

_FENCE = re.compile(r"^(```|~~~)")
_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
_INLINE = re.compile(r"`(lifecycle [a-z][^`]*)`")


def _split(text: str) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """(line number, line) of prose and of fenced code, apart."""
    prose, code, fenced = [], [], False
    for number, line in enumerate(text.splitlines(), 1):
        if _FENCE.match(line.strip()):
            fenced = not fenced
            continue
        (code if fenced else prose).append((number, line))
    return prose, code


def _command_lines() -> list[tuple[str, str]]:
    """(where, command line) of every `lifecycle ...` in the README and docs/ (not cli.md)."""
    found = []
    for path in DOCS:
        if path == CLI_PAGE:
            continue
        name = path.relative_to(PROJECT)
        prose, code = _split(path.read_text(encoding="utf-8"))
        joined = ""
        for number, line in code:
            line = joined + line.strip()
            if line.endswith("\\"):
                joined = line[:-1] + " "
                continue
            joined = ""
            line = line.removeprefix("$ ")
            if line.startswith("lifecycle "):
                found.append((f"{name}:{number}", line.split(" #")[0].strip()))
        text = "\n".join(line for _, line in prose)
        for match in _INLINE.finditer(text):
            number = prose[text[: match.start()].count("\n")][0]
            found.append((f"{name}:{number}", " ".join(match[1].split())))
    return found


def _variants(line: str) -> list[list[str]]:
    """The argument lists a line stands for: placeholders filled, `[...]` kept, `a|b` each."""
    line = re.sub(r"[\[\]]", " ", line)
    tokens = []
    for token in re.findall(r'"[^"]*"|\S+', line)[1:]:
        token = token.strip('"') if token.startswith('"') else token
        if token.endswith((".yml", ".yaml")):
            token = str(RULES)
        choices = token.split("|") if "|" in token and not token.startswith("-") else [token]
        tokens.append([PLACEHOLDERS.get(c, c) for c in choices])
    return [list(combo) for combo in itertools.product(*tokens)]


def _parse(args: list[str]) -> click.Command:
    """Parse ``args`` as the shell would hand them to `lifecycle`, down to the leaf command,
    converting every value; nothing runs."""
    command: click.Command = cli_main
    ctx = command.make_context("lifecycle", list(args))
    while isinstance(command, click.Group):
        rest = [*ctx._protected_args, *ctx.args]
        assert rest, f"`lifecycle {' '.join(args)}` names no command of the group"
        name, sub, remaining = command.resolve_command(ctx, rest)
        assert sub is not None, f"no command {name}"
        command = sub
        ctx = command.make_context(name, remaining, parent=ctx)
    return command


COMMANDS = _command_lines()


def test_the_docs_show_commands():
    assert len(COMMANDS) >= 30
    assert {line.split()[1] for _, line in COMMANDS} >= {"demo", "run", "preview", "rules",
                                                        "report", "outbox", "volume"}


@pytest.mark.parametrize(("where", "line"), COMMANDS, ids=[w for w, _ in COMMANDS])
def test_every_command_line_parses_with_the_cli(where, line):
    # `lifecycle run` alone in a sentence names the command: it must exist, options may be left
    naming = not any(t.startswith("-") for t in line.split())
    for args in _variants(line):
        try:
            _parse(args)
        except click.MissingParameter:
            if not naming:
                raise
        except (click.UsageError, click.BadParameter) as exc:
            pytest.fail(f"{where}: `{line}` does not parse: {exc.format_message()}")


def test_a_wrong_command_line_is_caught():
    with pytest.raises(click.UsageError):
        _parse(["run", "--dat", "2026-06-30"])
    with pytest.raises(click.UsageError):
        _parse(["rules", "difff"])
    with pytest.raises(click.BadParameter):
        _parse(["outbox", "--date", "30.06.2026"])
    assert _parse(["rules", "diff", str(RULES), str(RULES), "--date", "2026-06-30"]).name == "diff"


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    prose, _ = _split(path.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    anchors = set()
    for _, line in prose:
        heading = re.match(r"#{1,6} (.+)", line)
        if heading:
            slug = _slug(heading[1])
            anchors.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
            seen[slug] = seen.get(slug, 0) + 1
    return anchors


def _links() -> list[tuple[Path, int, str]]:
    found = []
    for path in DOCS:
        prose, _ = _split(path.read_text(encoding="utf-8"))
        for number, line in prose:
            found += [(path, number, target) for target in _LINK.findall(line)]
    return found


def test_every_relative_link_and_anchor_resolves():
    broken = []
    for path, number, target in _links():
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:
        where = f"{path.relative_to(PROJECT)}:{number}: {target}"
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.is_relative_to(PROJECT):
            broken.append(f"{where} points outside the repository")
        elif not dest.exists():
            broken.append(f"{where}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{where}: no heading with anchor #{anchor} in {dest.name}")
    assert not broken, "\n".join(broken)


def test_the_readme_links_every_page_of_docs():
    readme = (PROJECT / "README.md").read_text(encoding="utf-8")
    linked = {t.partition("#")[0] for p, _, t in _links() if p.name == "README.md"}
    pages = {f"docs/{p.name}" for p in DOCS if p.parent == PROJECT / "docs"}
    assert pages <= linked, f"README does not link {sorted(pages - linked)}"
    assert len(readme) < 12_000, "the README is a few screens; put the rest in docs/"


def test_no_document_refers_to_a_file_outside_the_repository():
    outside = []
    for path in DOCS:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if re.search(r"DESIGN\.md|\.\./shared|\]\(\.\./\.\.", line):
                outside.append(f"{path.relative_to(PROJECT)}:{number}: {line.strip()}")
    assert not outside, "\n".join(outside)


def test_the_anchor_slugs_are_githubs():
    assert _slug("Operations: deploy, backfill, rerun, scale, debug") == (
        "operations-deploy-backfill-rerun-scale-debug"
    )
    assert _slug("`lifecycle rules diff`") == "lifecycle-rules-diff"
    assert _slug("A worked example: start activation two days earlier") == (
        "a-worked-example-start-activation-two-days-earlier"
    )


def _cli_reference():
    spec = importlib.util.spec_from_file_location(
        "cli_reference", PROJECT / "scripts" / "cli_reference.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_cli_reference_is_generated_from_the_cli():
    reference = _cli_reference()
    assert CLI_PAGE.read_text(encoding="utf-8") == reference.render(), (
        f"docs/cli.md is stale: the CLI changed. Regenerate it with `{reference.REGENERATE}` "
        "and commit docs/cli.md."
    )
    # every leaf command of the CLI has its section
    page = CLI_PAGE.read_text(encoding="utf-8")
    for path, _ in reference._commands(cli_main, ["lifecycle"]):
        assert f"## `{' '.join(path)}`" in page


def test_every_setting_is_documented():
    from lifecycle.settings import Settings

    page = (PROJECT / "docs" / "settings.md").read_text(encoding="utf-8")
    missing = [f"LIFECYCLE_{name.upper()}" for name in Settings.model_fields
               if f"`LIFECYCLE_{name.upper()}`" not in page]
    assert missing == [], f"docs/settings.md does not describe {missing}"
