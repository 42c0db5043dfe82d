"""Planning one logical date: who gets which message, decided before anything is sent.

``audience`` reads each phase step's eligible customers from ``customer_facts`` as of the date,
with their outbox history and suppressions; ``arbitration`` picks at most one message per
customer by priority, caps, consents and the control group; ``outbox`` writes the messages and
the skips in one transaction; ``plan`` holds what they pass along; ``preview`` runs the same
decisions read-only and compares two rules files. May import: ``lifecycle.settings``,
``lifecycle.logs``, ``lifecycle.warehouse``, ``lifecycle.rules``.
"""
