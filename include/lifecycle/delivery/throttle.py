"""A token bucket per provider, shared by every dispatcher through the warehouse.

Each send reserves its cost (SMS: segments; email: requests) from one row in ``ops.rate_limits``
and waits until its reservation is due, so N workers together never exceed the configured rate,
whatever their number. A 429 from the provider pushes the whole channel back by its Retry-After
(``penalize``): every worker waits, not only the one that was refused.
"""

from __future__ import annotations

import threading
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

    def refund(self, tokens: float) -> None:
        """Give back tokens reserved and not used (a worker stopping with part of a chunk)."""
        if tokens > 0:
            self._conn.execute(
                "update ops.rate_limits set tokens = least(burst, tokens + %s) where key = %s",
                (tokens, self.key),
            )


class Pacer:
    """One worker's schedule on a shared bucket: when each send may start.

    A round trip to the warehouse per message would cap a worker near a few thousand sends a
    second, so the pacer reserves ``chunk_s`` seconds of traffic at a time and spreads the sends
    inside a chunk at the bucket's rate: each send starts when the token it uses is earned, so
    all workers together still never exceed the rate. ``hold`` (a 429) pushes the whole bucket
    back, this worker's schedule included; ``close`` returns what was reserved and not used.
    """

    def __init__(self, bucket: WarehouseTokenBucket, chunk_s: float = 0.05,
                 clock=time.monotonic):
        self.bucket, self.rate = bucket, bucket.rate
        self.chunk_s = chunk_s
        self._clock = clock
        self._left = 0.0  # reserved tokens not yet given to a send
        self._end = 0.0  # clock time when the last reserved token is earned
        self._hold_until = 0.0
        self._last = float("-inf")  # when the previous send was due, or started if later

    def due(self, cost: float, *, spaced: bool = True) -> float:
        """The clock time at which a send costing ``cost`` tokens may start.

        ``spaced=False``: the bucket's schedule only (a time in the past when the caller is
        late), for a caller that spaces its starts itself (``StartGate``).
        """
        if self._left < cost:
            chunk = max(cost - self._left, self.rate * self.chunk_s)
            wait = self.bucket.reserve(chunk)
            self._end = max(self._end, self._clock() + wait)
            self._left += chunk
        self._left -= cost
        # Tokens are earned one after another up to _end: this send's token came _left before.
        # A send that is late (the process was busy) does not let the next ones catch up in a
        # burst: starts stay at least cost/rate apart, as a provider counting requests in any
        # one second sees them.
        due = max(self._end - self._left / self.rate, self._hold_until)
        if spaced:
            due = max(due, self._last + cost / self.rate)
        self._last = max(due, self._clock())
        return due

    def hold(self, seconds: float) -> None:
        """The provider said wait (429 Retry-After): every worker on the bucket waits."""
        self.bucket.penalize(seconds)
        now = self._clock()
        self._hold_until = max(self._hold_until, now + seconds)
        self._end = max(self._end, now) + seconds

    def close(self) -> None:
        self.bucket.refund(self._left)
        self._left = 0.0


class StartGate:
    """One process's request starts, spaced as a provider's rate limit counts them.

    The pacer says when a request is due; a thread that starts it late (a busy process, a
    collector pause) must not then let the next ones go out right behind it, or the provider
    sees two or three requests inside one interval and refuses one (seen: 4-6 429s in 300
    requests at 10 requests/s). The gate is the virtual-scheduling form of a token bucket
    (GCRA): a start may come at most ``tolerance_s`` before its theoretical time, and each
    start moves that time on by one interval, so in any window of w seconds at most
    ``(w + tolerance_s) * rate + 1`` requests start. Lateness up to the tolerance is made up;
    beyond it the time is lost rather than burst through.
    """

    def __init__(self, rate_per_s: float, tolerance_s: float | None = None,
                 clock=time.monotonic, sleep=time.sleep):
        self.interval = 1.0 / rate_per_s
        self.tolerance = self.interval / 2 if tolerance_s is None else tolerance_s
        self._clock, self._sleep = clock, sleep
        self._tat = float("-inf")  # theoretical time of the next start
        self._lock = threading.Lock()

    def wait(self, due: float, cost: float = 1.0) -> float:
        """Block until a request due at clock time ``due`` may start; returns its start time."""
        with self._lock:  # starts are serialised: a start decides the next one's time
            start = max(due, self._tat - self.tolerance)
            now = self._clock()
            if start > now:
                self._sleep(start - now)
                now = self._clock()
            self._tat = max(self._tat, now) + cost * self.interval
            return now
