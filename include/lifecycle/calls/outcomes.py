"""Call outcomes: the file the front desk sends back (``lifecycle calls load``), all or nothing.

The file is the day's call list (``lifecycle calls list --format csv``) with its ``called_at``,
``outcome`` and ``note`` columns filled in, or any CSV with ``call_id``, ``called_at`` and
``outcome``. Each outcome is a ``call_centre`` event in ``ops.message_events`` (counted like
a provider's: a reached call is a delivered message) and settles the call's outbox row:

- reached, not_interested, interested, booked: ``sent`` (the step is done for good);
- no_answer: ``failed`` with ``call_no_answer``; the step's key is free, so a later day of the
  step's window plans the call again, up to policy.calls.max_attempts calls in all;
- wrong_number: ``failed`` with ``call_wrong_number``, and the phone is dead
  (``ops.dead_contacts``): no SMS or call goes to it again.

Loading the same file twice changes nothing; an outcome already loaded for a call is final (a
different one for it is an error).
"""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import psycopg

from lifecycle.calls.listing import LIST_COLUMNS
from lifecycle.contacts import PHONE, mark_dead
from lifecycle.data.contract import Column, ColumnType
from lifecycle.data.loader import LoadError, LoadIssue
from lifecycle.data.values import check_timestamp, masked
from lifecycle.planning.plan import CALL_NO_ANSWER

PROVIDER = "call_centre"
OUTCOMES = ("reached", "no_answer", "wrong_number", "not_interested", "interested", "booked")
# the customer answered: the call is a delivered message
REACHED = ("reached", "not_interested", "interested", "booked")
WRONG_NUMBER_ERROR = "call_wrong_number"
MAX_ISSUES = 50

COLUMNS = (
    Column("call_id", ColumnType.ID, "the call's id from the call list (its call_id column)"),
    Column(
        "called_at",
        ColumnType.TIMESTAMP,
        "when the call was made; empty only where the outcome is empty",
        nullable=True,
    ),
    Column(
        "outcome",
        ColumnType.ENUM,
        "what came of the call; empty = not called yet (the line is left for a later load)",
        nullable=True,
        choices=OUTCOMES,
    ),
    Column("note", ColumnType.TEXT, "the caller's note, kept with the outcome", nullable=True,
           required=False),
)
_REQUIRED = tuple(c.name for c in COLUMNS if c.required)
# the call list's own columns may stay in the file; they are not read
_ACCEPTED = set(LIST_COLUMNS) | {c.name for c in COLUMNS}


@dataclass
class OutcomeReport:
    file: str
    loaded: Counter = field(default_factory=Counter)  # outcome -> calls settled by this load
    unchanged: int = 0  # outcomes this load found already loaded
    not_called: int = 0  # lines with an empty outcome
    dead_phones: int = 0  # phones newly marked dead (wrong_number)

    def __str__(self) -> str:
        done = ", ".join(f"{n} {o}" for o, n in sorted(self.loaded.items())) or "none"
        return (f"{self.file}: outcomes loaded: {done}; already loaded: {self.unchanged}; "
                f"not called yet: {self.not_called}; phones marked dead: {self.dead_phones}")


@dataclass(frozen=True)
class _Line:
    line: int
    call_id: int
    called_at: datetime
    outcome: str
    note: str | None


def _issue(name: str, line: int | None, column: str | None, value: str | None,
           reason: str) -> LoadIssue:
    return LoadIssue(name, line, column, masked(value) if value is not None else None, reason)


def _read(path: Path, issues: list[LoadIssue]) -> tuple[list[_Line], int]:
    """The lines with an outcome, and the count of lines without one."""
    name = path.name
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        issues.append(_issue(name, None, None, None, "not valid UTF-8; save the file as UTF-8"))
        return [], 0
    reader = csv.reader(text.splitlines(keepends=True))
    try:
        header = next(reader)
    except StopIteration:
        issues.append(_issue(name, None, None, None,
                             f"the file is empty; expected a header with {', '.join(_REQUIRED)}"))
        return [], 0
    except csv.Error as exc:
        issues.append(_issue(name, 1, None, None, f"not valid CSV ({exc})"))
        return [], 0
    header = [h.strip() for h in header]
    valid = ", ".join(sorted(_ACCEPTED))
    for i, h in enumerate(header):
        if h not in _ACCEPTED:
            issues.append(_issue(name, 1, h, None, f"unknown column (position {i + 1}); the "
                                 f"columns are: {valid}"))
        elif header.index(h) != i:
            issues.append(_issue(name, 1, h, None, "column appears twice in the header"))
    for col in _REQUIRED:
        if col not in header:
            issues.append(_issue(name, 1, col, None, "required column missing from the header; "
                                 f"needed: {', '.join(_REQUIRED)}"))
    if issues:
        return [], 0
    at = {h: header.index(h) for h in header}
    out: list[_Line] = []
    seen: dict[int, int] = {}
    not_called = 0
    line = 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            issues.append(_issue(name, reader.line_num, None, None, f"not valid CSV ({exc})"))
            break
        line = reader.line_num
        if not any(v.strip() for v in row):
            continue
        if len(row) != len(header):
            issues.append(_issue(name, line, None, None, f"{len(row)} values, the header has "
                                 f"{len(header)}; quote values that hold commas"))
            continue
        get = {h: row[i].strip() for h, i in at.items()}
        call_id, called_at, outcome = get["call_id"], get["called_at"], get["outcome"]
        note = get.get("note") or None
        ok = True
        if not call_id.isdigit():
            issues.append(_issue(name, line, "call_id", call_id,
                                 "not a call id; expected the whole number of the call list's "
                                 "call_id column"))
            ok = False
        if outcome and outcome not in OUTCOMES:
            issues.append(_issue(name, line, "outcome", outcome,
                                 f"not an outcome; expected one of {', '.join(OUTCOMES)}, or "
                                 "empty if the call was not made yet"))
            ok = False
        if not outcome:
            if called_at:
                issues.append(_issue(name, line, "outcome", "",
                                     f"called_at is given but no outcome; expected one of "
                                     f"{', '.join(OUTCOMES)}"))
            else:
                not_called += 1
            continue
        problem = check_timestamp(called_at) if called_at else "missing"
        if problem:
            issues.append(_issue(name, line, "called_at", called_at,
                                 f"{problem}; expected a timestamp with its UTC offset like "
                                 "2026-06-15T11:30:00+03:00"))
            ok = False
        if ok:
            cid = int(call_id)
            if cid in seen:
                issues.append(_issue(name, line, "call_id", call_id,
                                     f"the call is in the file twice (first on line {seen[cid]}); "
                                     "one outcome per call"))
                continue
            seen[cid] = line
            out.append(_Line(line, cid, datetime.fromisoformat(called_at), outcome, note))
    return out, not_called


def load_outcomes(url: str, path: Path) -> OutcomeReport:
    """Load a call outcomes file: every line, or nothing (LoadError with every problem
    located by file, line and column)."""
    issues: list[LoadIssue] = []
    lines, not_called = _read(path, issues)
    report = OutcomeReport(path.name, not_called=not_called)
    if issues:
        raise LoadError(issues[:MAX_ISSUES], max(len(issues) - MAX_ISSUES, 0), str(path))
    with psycopg.connect(url) as conn:
        # one loader at a time: two loads of one file must not both write its outcomes
        conn.execute("select pg_advisory_xact_lock(727003)")
        ids = [x.call_id for x in lines]
        calls = {r[0]: r[1:] for r in conn.execute(
            "select outbox_id, channel, status, plan_date, to_address, last_error "
            "from ops.outbox where outbox_id = any(%s) for update", (ids,))}
        known = {r[0]: (r[1], r[2]) for r in conn.execute(
            "select outbox_id, event_type, occurred_at from ops.message_events "
            "where provider = %s and outbox_id = any(%s)", (PROVIDER, ids))}
        todo: list[_Line] = []
        for x in lines:
            name, cid = path.name, str(x.call_id)
            if x.call_id not in calls:
                issues.append(_issue(name, x.line, "call_id", cid,
                                     "no call with this id; expected a call_id from "
                                     "`lifecycle calls list`"))
                continue
            channel, status, plan_date, _, error = calls[x.call_id]
            if channel != "call":
                issues.append(_issue(name, x.line, "call_id", cid,
                                     f"this id is an {channel} message, not a call; expected a "
                                     "call_id from `lifecycle calls list`"))
                continue
            if x.call_id in known:
                event, when = known[x.call_id]
                if event == f"call_{x.outcome}" and when == x.called_at:
                    report.unchanged += 1
                else:
                    issues.append(_issue(
                        name, x.line, "outcome", x.outcome,
                        f"the call already has the outcome {event.removeprefix('call_')} "
                        f"(called at {when.isoformat()}), loaded before; an outcome is final"))
                continue
            if status != "planned":
                issues.append(_issue(
                    name, x.line, "call_id", cid,
                    f"the call was withdrawn before it was made (status {status}: {error}); "
                    "remove the line"))
                continue
            if x.called_at.date() < plan_date:
                issues.append(_issue(
                    name, x.line, "called_at", x.called_at.isoformat(),
                    f"before the call's day ({plan_date}); expected the time of the call"))
                continue
            todo.append(x)
        if issues:
            conn.rollback()
            raise LoadError(issues[:MAX_ISSUES], max(len(issues) - MAX_ISSUES, 0), str(path))
        for x in todo:
            _apply(conn, x, calls[x.call_id][3], f"calls:{path.name}", report)
    return report


def _apply(conn: psycopg.Connection, x: _Line, phone: str, source: str,
           report: OutcomeReport) -> None:
    conn.execute(
        """
        insert into ops.message_events (provider, channel, event_type, outbox_id, address,
                                        reason, occurred_at, dedupe_key)
        values (%s, 'call', %s, %s, %s, %s, %s, %s)
        on conflict do nothing
        """,
        (PROVIDER, f"call_{x.outcome}", x.call_id, phone, x.note, x.called_at,
         f"{PROVIDER}:{x.call_id}"),
    )
    if x.outcome in REACHED:
        conn.execute(
            "update ops.outbox set status = 'sent', sent_at = %(at)s, handed_at = %(at)s, "
            "provider_id = %(p)s, last_error = null, updated_at = now() "
            "where outbox_id = %(id)s and status = 'planned'",
            {"at": x.called_at, "p": PROVIDER, "id": x.call_id},
        )
    else:
        error = CALL_NO_ANSWER if x.outcome == "no_answer" else WRONG_NUMBER_ERROR
        conn.execute(
            "update ops.outbox set status = 'failed', last_error = %s, updated_at = now() "
            "where outbox_id = %s and status = 'planned'",
            (error, x.call_id),
        )
        if x.outcome == "wrong_number" and mark_dead(
            conn, PHONE, phone, "wrong_number", x.called_at, source
        ):
            report.dead_phones += 1
    report.loaded[x.outcome] += 1
