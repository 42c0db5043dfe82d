"""lifecycle: lifecycle marketing for subscription businesses on the club's own warehouse.

The package is grouped by job, one subpackage per layer; a room imports only the rooms listed in
its own docstring (``tests/unit/test_layers.py`` holds them to it), and none imports Airflow:

- ``settings``, ``logs``: typed settings from the environment; loggers that mask personal data.
- ``warehouse``: the PostgreSQL server (embedded or by URL), migrations, the facts contract.
- ``data``: the club's CSV files in: the contract, the all-or-nothing loader, a synthetic club.
- ``rules``: the marketers' rules file: models, located errors, conditions to SQL, templates.
- ``transform``: dbt runs of ``dbt_project/``, with the vars generated from the rules file.
- ``planning``: a day's audiences, arbitration and outbox rows; the preview and rules diff.
- ``delivery``: the outbox drained through a transport, throttled; provider webhooks; reconcile.
- ``insight``: what the messages did: the HTML report and the simulation.
- ``pipeline``, ``operations``: one logical day end to end, and what the DAGs call besides.
- ``cli``, ``demo``, ``airflow_env``: the ``lifecycle`` command and ``make demo``.
"""
