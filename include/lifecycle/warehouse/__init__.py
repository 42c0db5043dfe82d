"""The warehouse: where raw club data, the marts and the message ledger live.

``server`` finds the PostgreSQL to use (``LIFECYCLE_WAREHOUSE_URL``, else an embedded server
under ``.lifecycle/``) and connects to it; ``migrations`` creates the ``raw`` and ``ops`` schemas;
``facts`` names the contracted columns of the ``customer_facts`` mart, the interface between dbt
and Python. May import: ``lifecycle.settings``.
"""
