"""dbt: runs of the project in ``dbt_project/`` against the warehouse.

``dbt`` runs dbt (a subprocess, its environment derived from the warehouse URL) and keeps the
parsed manifest the daily DAG renders its tasks from; ``dbt_vars`` generates, from the validated
rules file, the ``lifecycle_phases`` var through which dbt gets every phase window and audience.
May import: ``lifecycle.settings``, ``lifecycle.warehouse``, ``lifecycle.rules``.
"""
