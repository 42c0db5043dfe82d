"""The call channel's desk side: the day's call list for each club (``listing``) and the
outcomes file the front desk or call centre sends back (``outcomes``).

Planning decides calls like any message (``ops.outbox`` rows with channel ``call``); dispatch
never claims them. What happens to a call is known only from its outcome.
"""
