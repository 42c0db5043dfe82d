"""Delivery: the outbox drained to the providers, at most once per message, and what comes back.

``dispatch`` claims due rows with a lease and sends them through a ``transports`` backend
(sandbox, the stand-in, or Twilio and SendGrid live), paced by ``throttle``'s shared token
buckets; ``webhooks`` receives the providers' signed events and opt-outs; ``reconcile`` settles
rows whose send was ambiguous from those events; ``standin`` is the local provider server tests
and benchmarks talk to. May import: ``lifecycle.settings``, ``lifecycle.logs``,
``lifecycle.warehouse``, ``lifecycle.rules`` (SMS segments).
"""
