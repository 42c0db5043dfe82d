"""Preview and diff: what a rules change would do, computed read-only on the warehouse."""

from __future__ import annotations

import json
from collections import Counter
from datetime import timedelta

import psycopg
import pytest
from click.testing import CliRunner
from test_plan_dispatch import (
    RULES,
    SETTINGS,
    D,
    customer_ids,
    facts_row,
    load_facts,
    rules_with,
)

from lifecycle.cli import main as cli
from lifecycle.logs import mask_email, mask_phone
from lifecycle.planning.outbox import plan_day
from lifecycle.planning.plan import PlanningError
from lifecycle.planning.preview import diff, preview

PHONES = [f"+38067{i:07d}" for i in range(40)]


@pytest.fixture
def club(fresh_db):
    """40 customers across phases and reasons, each with its own phone and email."""
    ids = customer_ids(36, control=False) + customer_ids(4, control=True)
    rows = []
    for i, cid in enumerate(ids):
        kind = i % 5
        kw: dict = {}
        if kind == 0:  # activation, days 18..36 (the window is 20-30)
            kw = dict(days_since_purchase=18 + (i // 5) * 2 % 19)
        elif kind == 1:  # retention (A/B variants)
            kw = dict(days_until_end=20)
        elif kind == 2:  # activation and retention: retention loses to activation
            kw = dict(days_since_purchase=25, days_until_end=30)
        elif kind == 3:  # retention without consent on any channel
            kw = dict(
                days_until_end=30,
                sms_consent=False,
                sms_contactable=False,
                email_consent=False,
                email_contactable=False,
            )
        else:  # return step 1
            kw = dict(
                has_active_membership=False,
                membership_status="expired",
                days_since_end=40,
                days_until_end=-40,
            )
        rows.append(facts_row(cid, phone=PHONES[i], email=f"member{i}@club-example.com", **kw))
    load_facts(fresh_db, rows)
    with psycopg.connect(fresh_db) as conn:
        conn.execute(
            "insert into ops.suppressions (customer_id, channel, reason, source) "
            "values (%s, 'sms', 'opted_out', 'test'), (%s, 'email', 'opted_out', 'test')",
            (ids[1], ids[1]),
        )
    return fresh_db, ids, rows


def _row_counts(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        tables = conn.execute(
            "select table_schema, table_name from information_schema.tables "
            "where table_schema in ('ops', 'raw', 'analytics') and table_type = 'BASE TABLE'"
        ).fetchall()
        out = {
            f"{s}.{t}": conn.execute(f'select count(*) from "{s}"."{t}"').fetchone()[0]
            for s, t in tables
        }
        out["outbox_seq"] = conn.execute(
            "select last_value from ops.outbox_outbox_id_seq"
        ).fetchone()[0]
    return out


def test_preview_writes_nothing_and_predicts_the_plan(club):
    url, ids, _ = club
    before = _row_counts(url)
    result = preview(url, RULES, D, SETTINGS)
    assert _row_counts(url) == before
    assert result.facts_as_of == D and result.facts_rows == 40

    report = plan_day(url, RULES, D, SETTINGS)
    by_phase = {p.name: p for p in result.phases}
    planned = Counter()
    for (phase, _), n in report.planned.items():
        planned[phase] += n
    assert {name: p.planned for name, p in by_phase.items() if p.planned} == dict(planned)
    assert result.planned == report.inserted_messages > 0
    assert result.skipped == dict(report.skipped)
    # every reason shows up where it belongs
    # the last 4 customers are the control group; they go through every rule as the others
    # do (the one of kind 2 loses retention to activation too)
    both = sum(1 for i in range(40) if i % 5 == 2)
    assert by_phase["retention"].skipped["lower_priority"] == both
    assert by_phase["retention"].skipped["no_consent"] >= 1
    assert by_phase["retention"].skipped["opted_out"] == 1
    # held back where a message would have been written: retention (36), activation (37) and
    # return (39); 38 has no consent on any channel, so no_consent, as a customer outside it
    assert sum(p.skipped.get("control_group", 0) for p in result.phases) == 3
    assert {name: p.control for name, p in by_phase.items() if p.control} == {
        "retention": {"sms": 1}, "activation": {"sms": 1}, "return": {"sms": 1}
    }
    assert dict(report.control) == {("retention", "sms"): 1, ("activation", "sms"): 1,
                                    ("return", "sms"): 1}
    assert set(by_phase["retention"].by_variant) == {"1:A", "1:B"}
    assert by_phase["activation"].eligible_by_step == {1: report.eligible[("activation", 1)]}
    assert "10:00-20:00" in result.send_window and "Europe/Kyiv" in result.send_window


def test_preview_samples_are_rendered_and_contacts_masked(club):
    url, _, rows = club
    result = preview(url, RULES, D, SETTINGS, samples=2)
    samples = [s for p in result.phases for s in p.samples]
    groups = Counter((s.phase, s.step, s.channel, s.variant) for s in samples)
    assert groups and max(groups.values()) <= 2
    assert {("retention", 1, "sms", "A"), ("retention", 1, "sms", "B")} <= set(groups)
    for s in samples:
        assert "{{" not in s.body and s.body
        if s.channel == "sms":
            assert s.to.startswith("+380") and "*" in s.to and s.sms["segments"] >= 1
    text = json.dumps(result.as_dict(), ensure_ascii=False)
    for r in rows:
        assert r["phone"] not in text and r["email"] not in text
    # the CLI prints the same, masked
    out = CliRunner().invoke(
        cli, ["preview", "--date", D.isoformat()], env={"LIFECYCLE_WAREHOUSE_URL": url}
    )
    assert out.exit_code == 0, out.output
    assert "Nothing is written or sent" in out.output and "retention" in out.output
    assert "variant B" in out.output
    # the return phase's audience by step, its repetitions with the window they moved to
    assert "step 4 (step 3 again: days_since_end 120-149) 0" in out.output
    assert as_dict_repetitions(result)[6] == "step 6 (step 3 again: days_since_end 180-209)"
    for r in rows:
        assert r["phone"] not in out.output and r["email"] not in out.output
    as_json = CliRunner().invoke(
        cli, ["preview", "--date", D.isoformat(), "--json"], env={"LIFECYCLE_WAREHOUSE_URL": url}
    )
    assert json.loads(as_json.output)["planned"] == result.planned


def as_dict_repetitions(result) -> dict[int, str]:
    return next(p for p in result.as_dict()["phases"] if p["name"] == "return")["repetitions"]


def test_masking():
    assert mask_phone("+380671234567") == "+380*******67"
    assert mask_phone("12") == "**"
    assert mask_email("olena.koval@gmail.com") == "o***@gmail.com"
    assert mask_email("no-at-sign") == "**********"


def test_preview_refuses_facts_built_for_another_day(club):
    url, _, _ = club
    with pytest.raises(PlanningError, match="built as of 2026-06-15, not 2026-06-16"):
        preview(url, RULES, D + timedelta(days=1), SETTINGS)
    out = CliRunner().invoke(
        cli,
        ["preview", "--date", (D + timedelta(days=1)).isoformat()],
        env={"LIFECYCLE_WAREHOUSE_URL": url},
    )
    assert out.exit_code == 2 and "built as of 2026-06-15" in out.output


def test_preview_reports_a_volume_guard_that_would_trip(club):
    url, _, _ = club
    before = _row_counts(url)
    result = preview(url, rules_with(("max_messages: 5000", "max_messages: 5")), D, SETTINGS)
    assert result.volume["tripped"] and any("volume guard would trip" in n for n in result.notes)
    assert _row_counts(url) == before


def test_diff_counts_who_enters_and_leaves(club, tmp_path):
    url, ids, rows = club
    wider = rules_with(
        (
            "{field: days_since_purchase, between: [20, 30]}",
            "{field: days_since_purchase, between: [22, 34]}",
        ),
    )
    before = _row_counts(url)
    result = diff(url, RULES, wider, D, SETTINGS, samples=3)
    assert _row_counts(url) == before

    def activation_ids(low: int, high: int) -> set[str]:
        return {
            r["customer_id"]
            for r in rows
            if r["days_since_purchase"] is not None
            and low <= r["days_since_purchase"] <= high
            and r["visits_since_purchase"] == 0
        }

    old, new = activation_ids(20, 30), activation_ids(22, 34)
    (act,) = [s for s in result.steps if s.phase == "activation"]
    assert (act.old, act.new) == (len(old), len(new))
    assert act.added == len(new - old) > 0 and act.removed == len(old - new) > 0
    assert act.added_sample == sorted(new - old)[:3]
    assert act.removed_sample == sorted(old - new)[:3]
    others = [s for s in result.steps if s.phase != "activation"]
    assert others and all(s.added == s.removed == 0 and s.old == s.new for s in others)
    assert result.changed == [act]

    # the CLI, from two files
    old_file, new_file = tmp_path / "old.yml", tmp_path / "new.yml"
    old_file.write_text(RULES.source)
    new_file.write_text(wider.source)
    out = CliRunner().invoke(
        cli,
        ["rules", "diff", str(old_file), str(new_file), "--date", D.isoformat(), "--json"],
        env={"LIFECYCLE_WAREHOUSE_URL": url},
    )
    assert out.exit_code == 0, out.output
    steps = {(s["phase"], s["step"]): s for s in json.loads(out.output)["steps"]}
    assert steps[("activation", 1)]["added"] == act.added
    text = CliRunner().invoke(
        cli,
        ["rules", "diff", str(old_file), str(new_file), "--date", D.isoformat()],
        env={"LIFECYCLE_WAREHOUSE_URL": url},
    )
    assert f"+{act.added}" in text.output and f"-{act.removed}" in text.output


def test_diff_of_a_disabled_phase_removes_its_audience(club):
    url, _, _ = club
    off = rules_with(
        ("    enabled: true\n    priority: 5\n", "    enabled: false\n    priority: 5\n")
    )
    result = diff(url, RULES, off, D, SETTINGS)
    ret = [s for s in result.steps if s.phase == "return"]
    assert [s.step for s in ret] == [1, 2, 3, 4, 5, 6]  # step 3 repeated up to step 6
    assert all(s.new is None and s.removed == s.old for s in ret)
    assert ret[0].removed > 0  # the fixture's lapsed customers are 40 days past the end
    assert "return" not in result.planned_new and result.planned_old["return"] > 0
