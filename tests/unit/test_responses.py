"""The simulation's response model: shipped with its sources, overridable, checked, stated."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from lifecycle.cli import main
from lifecycle.insight.report import assumptions, sensitivity_line
from lifecycle.insight.responses import (
    MODEL_FILE,
    RESPONSE_PHASES,
    ModelInvalid,
    ResponseModel,
    default_response_model,
    load_response_model,
    parse_response_model,
    sensitivity,
)


def test_the_shipped_model_cites_a_source_for_every_value() -> None:
    model = default_response_model()
    assert set(model.respond) == set(RESPONSE_PHASES)
    cited = set(RESPONSE_PHASES) | set(ResponseModel.model_fields) - {"respond", "sources"}
    assert set(model.sources) == cited
    # the anchors: a targeted membership offer converts ~2x the blast; a come-back step ~5%
    assert model.respond["retention"] == pytest.approx(2 * model.blast_respond)
    assert model.respond["return"] == 0.05
    assert model.blast_per_month == (3, 6)
    assert "fitness-club case" in model.sources["retention"]
    # the file's comments cite the same figures
    text = MODEL_FILE.read_text(encoding="utf-8")
    for phase in RESPONSE_PHASES:
        line = next(x for x in text.splitlines() if x.strip().startswith(f"{phase}:"))
        assert "#" in line and ("club case" in line or "dealer sketch" in line), line
    assert load_response_model(None) == model


def test_a_model_file_overrides_some_values_and_their_sources(tmp_path: Path) -> None:
    path = tmp_path / "model.yml"
    path.write_text("respond: {retention: 0.2}\nblast_respond: 0.01\n", encoding="utf-8")
    model = load_response_model(path)
    assert model.respond["retention"] == 0.2 and model.respond["return"] == 0.05
    assert model.blast_respond == 0.01
    # a changed value no longer claims the shipped source; the others keep theirs
    assert "retention" not in model.sources and "blast_respond" not in model.sources
    assert model.sources["return"] == default_response_model().sources["return"]
    text = " ".join(assumptions(model.model_dump(mode="json")))
    assert "A retention message makes 20% of the customers" in text
    assert "A return message makes 5% of the customers" in text
    assert "(Source: fitness-club case: each come-back step" in text


@pytest.mark.parametrize(
    ("text", "line", "column", "words"),
    [
        ("respond:\n  retension: 0.2\n", 2, 3, ["unknown phase 'retension'",
                                               "did you mean 'retention'"]),
        ("blast_respond: 2\n", 1, 16, ["'blast_respond' is out of range", "found 2",
                                       "valid: <= 1"]),
        ("opt_ot: 0.1\n", 1, 1, ["unknown field 'opt_ot'", "did you mean 'opt_out'"]),
        ("blast_per_month: [6, 3]\n", 1, 18, ["0 <= low <= high <= 31", "found [6, 3]"]),
        ("respond: {return: x}\n", 1, 19, ["wrong type for 'return'", "valid: a number"]),
        ("respond: 3\n", 1, 10, ["wrong type for 'respond'", "a mapping"]),
        ("max_lag_days: 2\nmax_lag_days: 3\n", 2, 1, ["max_lag_days"]),
        ("respond: [\n", 2, 1, ["not valid YAML"]),
    ],
)
def test_bad_model_files_are_located(text: str, line: int, column: int, words: list) -> None:
    with pytest.raises(ModelInvalid) as exc:
        parse_response_model(text, "model.yml")
    (err,) = exc.value.errors
    assert (err.line, err.column) == (line, column), str(err)
    assert str(err).startswith(f"model.yml:{line}:{column}: ")
    for word in words:
        assert word in str(err), str(err)


def test_every_mistake_at_once() -> None:
    with pytest.raises(ModelInvalid) as exc:
        parse_response_model("opt_out: -1\nrespond: {activation: 2}\n", "m.yml")
    assert [e.path for e in exc.value.errors] == ["opt_out", "respond.activation"]


def test_cli_simulate_refuses_a_bad_model_file_before_anything_runs(tmp_path: Path) -> None:
    path = tmp_path / "model.yml"
    path.write_text("respond:\n  retention: 1.5\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["simulate", "--days", "1", "--model", str(path)])
    assert result.exit_code == 1
    assert f"{path}:2:14: respond.retention: 'retention' is out of range" in result.output


def test_sensitivity_caps_each_rate_at_the_multiple_of_the_blast() -> None:
    model = default_response_model().model_dump(mode="json")
    cap = 1.5 * model["blast_respond"]
    conversions = {"activation": 70, "stimulation": 40, "cross_sell": 0, "retention": 50,
                   "return": 10}
    revenue = {"activation": 0.0, "stimulation": 4000.0, "cross_sell": 0.0,
               "retention": 500000.0, "return": 50000.0}
    alt = sensitivity(conversions, revenue, model)
    factor = {p: min(r, cap) / r for p, r in model["respond"].items()}
    assert alt["factor"] == pytest.approx(factor)
    assert alt["conversions"] == pytest.approx(sum(n * factor[p] for p, n in conversions.items()))
    assert alt["revenue"] == pytest.approx(sum(v * factor[p] for p, v in revenue.items()))
    assert alt["conversions"] < sum(conversions.values())
    # rates already under the cap stay as they are
    low = {**model, "respond": {p: 0.001 for p in model["respond"]}}
    assert sensitivity(conversions, revenue, low)["conversions"] == sum(conversions.values())
    pols = {
        "lifecycle": {"conversions": conversions, "revenue": revenue, "cost": 120.0},
        "blast": {"conversions_total": 90, "revenue_total": 700000.0, "cost": 9000.0},
    }
    line = sensitivity_line(pols, model, "UAH")
    assert line.startswith("If a lifecycle message converted only 1.5 times as often as a "
                           "blast SMS (at most 3.8%")
    assert f"about {alt['conversions']:,.0f} conversions" in line
    assert "against AS IS's 90 and 700,000 UAH" in line and "not a second run" in line
    assert sensitivity_line({"lifecycle": pols["lifecycle"]}, model, "UAH") is None


def test_the_shipped_file_is_plain_yaml_a_club_can_copy() -> None:
    data = yaml.safe_load(MODEL_FILE.read_text(encoding="utf-8"))
    assert ResponseModel.model_validate(data) == default_response_model()
