"""The start gate: a late request is made up within the tolerance, never burst through."""

from __future__ import annotations

import threading

from lifecycle.delivery.throttle import StartGate


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def _gate(clock: FakeClock, rate: float, tolerance: float | None = None) -> StartGate:
    return StartGate(rate, tolerance_s=tolerance, clock=clock, sleep=clock.sleep)


def test_on_time_requests_start_when_due():
    clock = FakeClock()
    gate = _gate(clock, rate=10)
    starts = [gate.wait(i * 0.1) for i in range(20)]
    assert all(abs(s - i * 0.1) < 1e-9 for i, s in enumerate(starts)), starts


def test_a_late_start_is_made_up_within_the_tolerance_but_never_bunched():
    clock = FakeClock()
    gate = _gate(clock, rate=10, tolerance=0.05)
    gate.wait(0.0)
    clock.now = 0.19  # the process was busy: request 1, due at 0.1, starts at 0.19
    s1 = gate.wait(0.1)
    s2 = gate.wait(0.2)  # due now: may not start right behind the late one
    assert s1 == 0.19
    assert abs(s2 - (0.19 + 0.1 - 0.05)) < 1e-9  # 50 ms of the lateness made up, not 90
    s3 = gate.wait(0.3)
    assert abs(s3 - (s2 + 0.1)) < 1e-9  # then one interval apart again


def test_no_window_holds_more_starts_than_the_rate_plus_the_tolerance():
    # Requests due in a clump (a backlog, a pause): whatever their due times, starts in any
    # window of w seconds are at most (w + tolerance) * rate + 1.
    clock = FakeClock()
    rate, tol = 20.0, 0.05
    gate = _gate(clock, rate=rate, tolerance=tol)
    starts = [gate.wait(0.0) for _ in range(100)]
    for w in (0.1, 0.5, 1.0):
        most = max(sum(1 for t in starts if s <= t < s + w) for s in starts)
        assert most <= (w + tol) * rate + 1, (w, most)
    assert abs((starts[-1] - starts[0]) - 99 / rate + tol) < 1e-6


def test_threads_share_one_schedule():
    gate = StartGate(200.0, tolerance_s=0.0)  # real clock: 5 ms apart, strictly
    starts: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(10):
            s = gate.wait(0.0)
            with lock:
                starts.append(s)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    starts.sort()
    assert len(starts) == 40
    assert min(b - a for a, b in zip(starts, starts[1:], strict=False)) >= 0.005 - 1e-6
