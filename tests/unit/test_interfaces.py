"""The interfaces between the parts agree: dbt's contract vs the rule engine, the data contract
page (docs/data-contract.md) vs the data contract."""

from __future__ import annotations

from pathlib import Path

import yaml

from lifecycle.data.contract import contract_markdown
from lifecycle.warehouse.facts import FACT_COLUMNS, FACT_VALUES

PROJECT = Path(__file__).resolve().parents[2]


def test_rule_engine_columns_are_the_enforced_dbt_contract():
    doc = yaml.safe_load((PROJECT / "dbt_project/models/marts/_marts__models.yml").read_text())
    (model,) = [m for m in doc["models"] if m["name"] == "customer_facts"]
    assert model["config"]["contract"]["enforced"] is True
    dbt_types = {c["name"]: c["data_type"].split("(")[0] for c in model["columns"]}
    assert dbt_types == dict(FACT_COLUMNS)


def test_rule_engine_value_sets_are_the_dbt_accepted_values():
    doc = yaml.safe_load((PROJECT / "dbt_project/models/marts/_marts__models.yml").read_text())
    (model,) = [m for m in doc["models"] if m["name"] == "customer_facts"]
    (checks,) = [t["checks"] for t in model["data_tests"] if "checks" in t]
    accepted = checks["arguments"]["accepted_values"]
    assert "rfm_segment" in FACT_VALUES
    for column, values in FACT_VALUES.items():
        assert sorted(values) == sorted(accepted[column]), column


def test_the_docs_show_the_data_contract_as_defined():
    page = (PROJECT / "docs" / "data-contract.md").read_text()
    start, end = "<!-- contract:start -->", "<!-- contract:end -->"
    shown = page[page.index(start) + len(start) : page.index(end)].strip()
    assert shown == contract_markdown().strip(), (
        "docs/data-contract.md's contract table is stale: paste "
        "lifecycle.data.contract.contract_markdown() between its contract markers"
    )
