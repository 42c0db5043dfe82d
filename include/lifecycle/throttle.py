"""A token bucket per provider, shared by every dispatcher through the warehouse.

Each send reserves its cost (SMS: segments; email: requests) from one row in ``ops.rate_limits``
and waits until its reservation is due, so N workers together never exceed the configured rate,
whatever their number. A 429 from the provider pushes the whole channel back by its Retry-After
(``penalize``): every worker waits, not only the one that was refused.
"""

from __future__ import annotations

import time

import psycopg

_RESERVE = """
update ops.rate_limits
set tokens = least(burst, tokens + rate * extract(epoch from clock_timestamp() - updated_at))
             - %(cost)s,
    updated_at = clock_timestamp()
where key = %(key)s
returning tokens, rate
"""


class WarehouseTokenBucket:
    def __init__(self, url: str, key: str, rate_per_s: float, burst: float | None = None):
        if rate_per_s <= 0:
            raise ValueError(f"rate for {key} must be > 0, got {rate_per_s}")
        self.key, self.rate = key, float(rate_per_s)
        # A small burst (10 ms of traffic) keeps the achieved rate close to the configured one.
        self.burst = float(burst if burst is not None else max(1.0, rate_per_s / 100))
        self._conn = psycopg.connect(url, autocommit=True)
        self._conn.execute(
            "insert into ops.rate_limits (key, rate, burst, tokens, updated_at) "
            "values (%s, %s, %s, %s, clock_timestamp()) "
            "on conflict (key) do update set rate = excluded.rate, burst = excluded.burst",
            (key, self.rate, self.burst, self.burst),
        )

    def reserve(self, cost: float) -> float:
        """Take ``cost`` tokens; the seconds to wait before using them (0 when available)."""
        tokens, rate = self._conn.execute(_RESERVE, {"cost": cost, "key": self.key}).fetchone()
        return max(0.0, -tokens / rate)

    def acquire(self, cost: float) -> float:
        """Reserve and sleep until the reservation is due; returns the time slept."""
        wait = self.reserve(cost)
        if wait:
            time.sleep(wait)
        return wait

    def penalize(self, seconds: float) -> None:
        """Everyone on this bucket waits ``seconds`` more (the provider said Retry-After)."""
        self._conn.execute(
            "update ops.rate_limits set tokens = tokens - rate * %s where key = %s",
            (seconds, self.key),
        )

    def close(self) -> None:
        self._conn.close()
