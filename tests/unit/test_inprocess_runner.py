"""lifecycle.transform.inprocess.cached_runner: the project parsed once per process, again when
what a parse makes could differ (the warehouse, a var other than the as-of date). Real dbt
parses; no warehouse is dialled (a parse needs a profile, not a connection)."""

from __future__ import annotations

import os

from lifecycle.settings import Settings
from lifecycle.transform.dbt_vars import VAR_NAME
from lifecycle.transform.inprocess import cached_runner

URL = "postgresql://parse@127.0.0.1:5999/club_a"


def _databases(runner) -> set[str]:
    return {n.database for n in runner.runner.manifest.nodes.values()
            if n.resource_type == "model"}


def test_one_parse_serves_every_day_until_the_warehouse_or_a_var_changes():
    settings = Settings()
    environ = dict(os.environ)
    first = cached_runner(URL, settings, {VAR_NAME: '{"phases": []}'})
    # dbt's environment is set only while dbt runs
    assert dict(os.environ) == environ
    assert _databases(first) == {"club_a"}
    assert cached_runner(URL, settings, {VAR_NAME: '{"phases": []}'}) is first

    # a var can change the parse (a test enabled by it): parsed again
    other_vars = cached_runner(URL, settings, {VAR_NAME: '{"phases": []}', "demo_club": True})
    assert other_vars is not first
    # another warehouse: the manifest names the database of each relation
    other_club = cached_runner(URL.replace("club_a", "club_b"), settings,
                               {VAR_NAME: '{"phases": []}'})
    assert _databases(other_club) == {"club_b"}
    # one runner is kept: going back parses again
    assert cached_runner(URL, settings, {VAR_NAME: '{"phases": []}'}) is not first
