"""Rule errors: each mistake located (file, line, column, path) and explained.

A ``RuleError`` says what was found, what would be valid and, when a near name exists, what was
meant. ``RulesInvalid`` carries every error of a file at once. Pydantic's validation errors are
turned into the same form here.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass
from typing import Any, NamedTuple

# --------------------------------------------------------------------------- errors


def path_str(parts: tuple[Any, ...]) -> str:
    if not parts:
        return ROOT
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        elif re.fullmatch(r"[A-Za-z0-9_-]+", str(p)):
            out += f".{p}" if out else str(p)
        else:  # an odd key (empty, with dots or spaces) is shown quoted
            out += f"[{json.dumps(str(p), ensure_ascii=False)}]"
    return out


@dataclass(frozen=True)
class RuleError:
    """One mistake in a rules file, located and explained."""

    file: str
    line: int | None
    column: int | None
    path: str
    message: str
    found: str | None = None
    valid: str | None = None
    suggestion: str | None = None

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}:{self.column}"
        return f"{where}: {self.path}: {self.message}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "path": self.path,
            "message": self.message,
            "found": self.found,
            "valid": self.valid,
            "did_you_mean": self.suggestion,
        }


class RulesInvalid(Exception):
    def __init__(self, errors: list[RuleError]):
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))


ROOT = "<root>"


class Problem(NamedTuple):
    """A mistake found while walking the document, before it is located in the file."""

    parts: tuple
    message: str
    found: str | None = None
    valid: str | None = None
    suggestion: str | None = None
    at_key: bool = False  # locate the key itself (unknown fields), not its value

    @property
    def path(self) -> str:
        return path_str(self.parts)


def closest(found: Any, valid: list[str] | tuple[str, ...]) -> str | None:
    if not isinstance(found, str):
        return None
    close = difflib.get_close_matches(found, list(valid), n=1, cutoff=0.6)
    return close[0] if close else None


def listing(valid: list[str] | tuple[str, ...] | set[str] | frozenset[str], limit: int = 12) -> str:
    items = sorted(str(v) for v in valid)
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")


def _describe(value: Any) -> str:
    """What was found, short enough for one line of an error."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, dict):
        keys = ", ".join(str(k) for k in list(value)[:5])
        return f"a mapping with keys {keys}" if value else "an empty mapping"
    if isinstance(value, list):
        return f"a list of {len(value)} item(s)" if value else "an empty list"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def problem_at(
    parts: tuple,
    what: str,
    *,
    found: Any = ...,
    found_text: str | None = None,
    valid: str | None = None,
    suggestion: str | None = None,
    at_key: bool = False,
) -> Problem:
    """A Problem whose message reads: what; found ...; valid: ...; did you mean '...'?

    ``found`` is the value as read (described here); ``found_text`` an already-worded finding.
    """
    if found_text is None and found is not ...:
        found_text = _describe(found)
    msg = what
    if found_text is not None and "found" not in what:
        msg += f"; found {found_text}"
    if valid:
        # The message stays one readable line; RuleError.valid keeps the whole list.
        items = valid.split(", ")
        shown = (
            valid if len(items) <= 15 else ", ".join(items[:12]) + f", ... ({len(items)} in all)"
        )
        msg += f"; valid: {shown}"
    if suggestion:
        msg += f"; did you mean '{suggestion}'?"
    return Problem(parts, msg, found_text, valid, suggestion, at_key)
