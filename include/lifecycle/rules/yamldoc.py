"""The rules file as YAML with positions: every value and key keeps its line and column.

Aliases are expanded with a bound (an alias "bomb" is refused), duplicate keys are reported,
and problems found later are located back in the file from their document path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from lifecycle.rules.errors import ROOT, Problem, RuleError, path_str, problem_at

# --------------------------------------------------------------------------- YAML with positions

_MAX_NODES = 200_000  # an alias "bomb" expands exponentially; real files have a few hundred


@dataclass
class MarkedDoc:
    data: Any
    marks: dict[tuple, tuple[int, int]]  # path -> (line, column) of the value, 1-based
    key_marks: dict[tuple, tuple[int, int]]  # path -> (line, column) of its key
    problems: list[Problem]


def compose_with_marks(text: str) -> MarkedDoc:
    """Parse YAML into Python data plus value and key positions (raises yaml.YAMLError)."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        doc = MarkedDoc(None, {(): (1, 1)}, {}, [])
        if node is None:
            return doc
        count = 0

        def mark(n: yaml.Node) -> tuple[int, int]:
            return n.start_mark.line + 1, n.start_mark.column + 1

        def walk(n: yaml.Node, path: tuple, stack: frozenset[int]) -> Any:
            nonlocal count
            count += 1
            if count > _MAX_NODES:
                raise DocumentTooLarge()
            doc.marks.setdefault(path, mark(n))
            if id(n) in stack:
                doc.problems.append(
                    problem_at(path, "an alias refers to its own parent (recursive YAML)")
                )
                return None
            inner = stack | {id(n)}
            if isinstance(n, yaml.MappingNode):
                out: dict[str, Any] = {}
                for k, v in n.value:
                    if not isinstance(k, yaml.ScalarNode):
                        doc.problems.append(
                            Problem(path, "a key must be a plain name, not a list or mapping")
                        )
                        doc.marks.setdefault(path + ("?",), mark(k))
                        continue
                    key = k.value
                    if key in out:
                        doc.key_marks.setdefault(path + (key, "#dup"), mark(k))
                        doc.problems.append(
                            problem_at(
                                path + (key, "#dup"),
                                f"key '{key}' appears twice (the first one is used)",
                                at_key=True,
                            )
                        )
                        continue
                    doc.key_marks[path + (key,)] = mark(k)
                    doc.marks[path + (key,)] = mark(v)
                    out[key] = walk(v, path + (key,), inner)
                return out
            if isinstance(n, yaml.SequenceNode):
                return [walk(v, path + (i,), inner) for i, v in enumerate(n.value)]
            try:
                return loader.construct_object(n, deep=True)
            except (yaml.YAMLError, ValueError, OverflowError) as exc:
                # e.g. a date like 2026-13-45 matches YAML's timestamp pattern but is no date
                doc.problems.append(
                    problem_at(path, f"cannot read this value: {exc}", found_text=repr(n.value))
                )
                return None

        doc.data = walk(node, (), frozenset())
        return doc
    finally:
        loader.dispose()


class DocumentTooLarge(Exception):
    pass


# libyaml when the wheel has it (10x faster); nodes carry the same marks either way.
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def yaml_error(name: str, text: str, exc: yaml.YAMLError) -> RuleError:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    if mark is not None:
        line, col = mark.line + 1, mark.column + 1
    elif isinstance(getattr(exc, "position", None), int):  # ReaderError: a bad character
        before = text[: exc.position]
        line, col = before.count("\n") + 1, len(before) - (before.rfind("\n") + 1) + 1
    else:
        line, col = None, None
    what = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return RuleError(name, line, col, ROOT, f"not valid YAML: {what}")


def locate_all(name: str, doc: MarkedDoc, problems: list[Problem]) -> list[RuleError]:
    out: list[RuleError] = []
    seen: set[tuple[str, str]] = set()
    for p in problems:
        parts = tuple(x for x in p.parts if x != "#dup")
        line, col = _locate(doc, p.parts, p.at_key)
        err = RuleError(
            name, line, col, path_str(parts), p.message, p.found, p.valid, p.suggestion
        )
        if (err.path, err.message) not in seen:
            seen.add((err.path, err.message))
            out.append(err)
    out.sort(key=lambda e: (e.line or 0, e.column or 0, e.path))
    return out


def _locate(doc: MarkedDoc, parts: tuple, at_key: bool = False) -> tuple[int | None, int | None]:
    if at_key and parts in doc.key_marks:
        return doc.key_marks[parts]
    for n in range(len(parts), -1, -1):
        if parts[:n] in doc.marks:
            return doc.marks[parts[:n]]
    return None, None
