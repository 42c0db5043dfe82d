"""Insight: what the messages did, in numbers a club can take to its board.

``report`` writes the self-contained HTML report (sends, costs, conversions and uplift against
the control group, from the dbt marts) and the per-day summaries the DAG logs; ``simulate``
lives a synthetic club day by day under the rules or under a blast campaign to compare the two.
May import every room below it and ``lifecycle.pipeline`` (the simulation runs its days the way
production does).
"""
