"""Write docs/cli.md, the reference of the ``lifecycle`` command, from the click CLI itself.

Usage: python scripts/cli_reference.py [--check]

``--check`` writes nothing and exits 1 when docs/cli.md is not what the CLI generates
(tests/unit/test_docs.py runs the same comparison). The page is built from each command's
usage, help text and parameters only: no terminal width, no machine-dependent default.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

import click

from lifecycle.cli import main as cli_main

PAGE = Path(__file__).resolve().parents[1] / "docs" / "cli.md"
REGENERATE = ".venv/bin/python scripts/cli_reference.py"

HEADER = f"""# CLI reference

<!-- Generated from the click CLI (lifecycle.cli) by `{REGENERATE}`; do not edit by hand.
     tests/unit/test_docs.py fails when it is stale. -->

`lifecycle` is installed in `.venv/bin/` by `make install` (or activate `.venv`). Every command
has `--help`. The [README](../README.md) has a tour; the guides say when to use which command.
"""


def _commands(group: click.Group, path: list[str]):
    """(path, command) depth first, in the order a reader meets them: alphabetical."""
    ctx = click.Context(group, info_name=" ".join(path))
    for name in sorted(group.list_commands(ctx)):
        command = group.get_command(ctx, name)
        if command is None or command.hidden:
            continue
        yield [*path, name], command
        if isinstance(command, click.Group):
            yield from _commands(command, [*path, name])


def _default(param: click.Parameter) -> str | None:
    if not getattr(param, "show_default", False) or callable(param.default):
        return None
    if param.default is None or param.default is False:
        return None
    return str(param.default)


def _param_line(param: click.Parameter) -> str:
    if isinstance(param, click.Argument):
        name = f"`{param.human_readable_name}`"
        text = "argument" + ("" if param.required else ", optional")
        return f"- {name}: {text}"
    assert isinstance(param, click.Option)
    names = ", ".join(f"`{o}`" for o in [*param.opts, *param.secondary_opts])
    kind = "" if param.is_flag else f" {param.type.name.upper()}"
    if isinstance(param.type, click.Choice):
        kind = " " + "|".join(param.type.choices)
    parts = [param.help or ""]
    if param.required:
        parts.append("required")
    default = _default(param)
    if default is not None:
        parts.append(f"default: `{default}`")
    text = "; ".join(p for p in parts if p)
    return f"- {names}{kind}" + (f": {text}" if text else "")


def render() -> str:
    """The page, from the CLI as it is now."""
    out = [HEADER]
    out.append(inspect.cleandoc(cli_main.help or "") + "\n")
    out.append("Commands: " + ", ".join(
        f"[`{' '.join(path[1:])}`](#{'-'.join(path)})"
        for path, cmd in _commands(cli_main, ["lifecycle"])
        if not isinstance(cmd, click.Group)
    ) + ".\n")
    for path, command in _commands(cli_main, ["lifecycle"]):
        ctx = click.Context(command, info_name=" ".join(path))
        usage = " ".join(command.collect_usage_pieces(ctx))
        out.append(f"## `{' '.join(path)}`\n")
        out.append(f"```\n{' '.join(path)} {usage}\n```\n")
        help_text = inspect.cleandoc(command.help or "").split("\f")[0].strip()
        if help_text:
            out.append(help_text + "\n")
        params = [p for p in command.get_params(ctx) if "--help" not in getattr(p, "opts", [])]
        if params and not isinstance(command, click.Group):
            out.append("\n".join(_param_line(p) for p in params) + "\n")
        if isinstance(command, click.Group):
            subs = sorted(command.list_commands(ctx))
            out.append("Commands: " + ", ".join(f"`{s}`" for s in subs) + ".\n")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    text = render()
    current = PAGE.read_text(encoding="utf-8") if PAGE.exists() else ""
    if "--check" in argv:
        if current != text:
            print(f"{PAGE} is stale: run `{REGENERATE}`", file=sys.stderr)
            return 1
        return 0
    if current != text:
        PAGE.write_text(text, encoding="utf-8")
        print(f"{PAGE}: updated")
    else:
        print(f"{PAGE}: already up to date")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
