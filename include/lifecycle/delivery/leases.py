"""Claims over time: leases, the hand-over fence, the heartbeat and recovery of lapsed claims.

A claim's batch id is its fencing token. ``hand_over`` runs immediately before each provider
request: one committed statement that checks the rows are still claimed by the batch and stamps
``handed_at``; only the rows it returns may be sent. ``hand_back`` undoes it for rows a request
certainly did not deliver. ``Heartbeat`` keeps a healthy dispatcher's leases alive;
``expire_and_recover`` settles the claims of one that stopped: rows never handed over are
planned again (certainly not sent), rows handed over become ``unknown`` (never sent again).
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from datetime import date, datetime, timedelta

import psycopg

from lifecycle.delivery.recheck import Recheck

LEASE_LOST = "worker lost its lease: send outcome unknown"


def expire_and_recover(
    conn: psycopg.Connection,
    now: datetime,
    *,
    lease_now: datetime | None = None,
    plan_date: date | None = None,
) -> tuple[int, int]:
    """Expire planned rows past their deadline (not calls: a call stays planned until its
    outcome is loaded); settle claims whose lease lapsed.

    A lapsed claim's rows never handed to a provider request go back to planned (certainly not
    sent); rows that were handed over become unknown (they may have been sent). ``now`` judges
    deadlines, ``lease_now`` (default ``now``) leases. A replay of ``plan_date`` (the logical
    clock) sends that day's rows at their own send times, so their deadlines are not judged by
    the replay's clock. Rows another transaction holds are left for a later run (see
    ``_UNLOCKED``). Returns (expired, unknown).
    """
    lease_now = lease_now or now
    expired = conn.execute(
        _UNLOCKED.format(
            set="status = 'expired', last_error = 'deadline passed before sending'",
            where="status = 'planned' and deadline_at < %s "
                  "and plan_date is distinct from %s and channel <> 'call'"),
        (now, plan_date),
    ).rowcount
    conn.execute(
        _UNLOCKED.format(set="status = 'planned', lease_until = null",
                         where="status = 'claimed' and handed_at is null and lease_until < %s"),
        (lease_now,),
    )
    lost = conn.execute(
        _UNLOCKED.format(set="status = 'unknown', last_error = %s",
                         where="status = 'claimed' and lease_until < %s"),
        (LEASE_LOST, lease_now),
    ).rowcount
    return expired, lost


# Rows another transaction holds are left alone, not waited for: a dispatcher frozen (or
# stopped in a debugger, or paused with its VM) between a statement and its commit holds its
# rows' locks for as long as it is frozen, and the dispatcher that came to take over would wait
# for it, and everything behind it. Its rows are settled by a later run, once its transaction
# has ended: it commits when it wakes (the rows stay its own), or it dies and rolls back.
_UNLOCKED = """
update ops.outbox o set {set}, updated_at = now()
where o.outbox_id in (select outbox_id from ops.outbox where {where} for update skip locked)
"""


def hand_over(conn: psycopg.Connection, batch_id: int, outbox_ids: list[int],
              at: datetime, recheck: Recheck | None = None) -> set[int]:
    """The rows of ``outbox_ids`` still claimed by ``batch_id``, now stamped as handed over.

    The check and the stamp are one committed statement, run immediately before the provider
    request that carries the rows: a row whose claim lapsed and was recovered (or claimed
    again by another dispatcher) is not returned and must not be sent. With ``recheck``,
    rows whose customer converted since the plan are expired first, in the same transaction
    (``converted_before_send``), and not returned either.
    """
    if recheck is not None:
        converted = recheck.skip_converted(conn, batch_id, outbox_ids)
        outbox_ids = [i for i in outbox_ids if i not in converted]
    rows = conn.execute(
        "update ops.outbox set handed_at = %s "
        "where outbox_id = any(%s) and batch_id = %s and status = 'claimed' "
        "returning outbox_id",
        (at, outbox_ids, batch_id),
    ).fetchall()
    conn.commit()
    return {r[0] for r in rows}


def hand_back(conn: psycopg.Connection, batch_id: int, outbox_ids: list[int]) -> int:
    """Undo the hand-over of rows whose request certainly did not deliver them (refused,
    failed before the provider took it); committed. A worker that dies before recording
    their outcome then leaves them planned again, not unknown."""
    n = conn.execute(
        "update ops.outbox set handed_at = null "
        "where outbox_id = any(%s) and batch_id = %s and status = 'claimed'",
        (outbox_ids, batch_id),
    ).rowcount
    conn.commit()
    return n


def extend_leases(conn: psycopg.Connection, batch_ids: list[int], until: datetime) -> int:
    """Keep the leases of batches this dispatcher holds alive (the heartbeat); committed.

    Only rows still claimed by those batches: a claim that lapsed and was recovered stays so.
    """
    n = conn.execute(
        "update ops.outbox set lease_until = %s "
        "where batch_id = any(%s) and status = 'claimed' and lease_until < %s",
        (until, batch_ids, until),
    ).rowcount
    conn.commit()
    return n


# Suppression reason -> the skip reason an outbox row gets (as planning's SUPPRESSION_SKIPS).


class HandOvers:
    """The hand-over checks of one drain, on a connection and thread of their own.

    Requests come from the transport's threads (or its event loop) just before each provider
    request; the ones waiting together are checked and stamped in one statement per batch, so
    a provider request waits for one round trip, never for a queue of them.
    """

    def __init__(self, url: str, clock, recheck: Recheck | None = None) -> None:
        self._conn = psycopg.connect(url)
        self._clock = clock
        self._recheck = recheck
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="hand-over", daemon=True)
        self._thread.start()

    def for_batch(self, batch_id: int) -> BatchHandOver:
        return BatchHandOver(self, batch_id)

    def submit(self, batch_id: int, outbox_ids: list[int]) -> Future[set[int]]:
        future: Future[set[int]] = Future()
        self._queue.put((batch_id, outbox_ids, future))
        return future

    def release(self, batch_id: int, outbox_ids: list[int]) -> None:
        self._queue.put((batch_id, outbox_ids, None))

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            waiting = [item]
            while True:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)  # stop after answering these
                    break
                waiting.append(more)
            by_batch: dict[int, list[int]] = {}
            back: dict[int, list[int]] = {}
            for batch_id, ids, future in waiting:
                (by_batch if future else back).setdefault(batch_id, []).extend(ids)
            try:
                for b, ids in back.items():
                    hand_back(self._conn, b, ids)
                allowed = {b: hand_over(self._conn, b, ids, self._clock(), self._recheck)
                           for b, ids in by_batch.items()}
            except Exception as exc:  # answered to every waiter; the drain then fails
                for _, _, future in waiting:
                    if future:
                        future.set_exception(exc)
                continue
            for batch_id, ids, future in waiting:
                if future:
                    future.set_result(allowed[batch_id].intersection(ids))

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        self._conn.close()


class BatchHandOver:
    """``HandOver`` for one claimed batch."""

    def __init__(self, service: HandOvers, batch_id: int) -> None:
        self._service = service
        self._batch_id = batch_id

    def submit(self, outbox_ids: list[int]) -> Future[set[int]]:
        return self._service.submit(self._batch_id, outbox_ids)

    def __call__(self, outbox_ids: list[int]) -> set[int]:
        return self.submit(outbox_ids).result()

    def release(self, outbox_ids: list[int]) -> None:
        self._service.release(self._batch_id, outbox_ids)


class Heartbeat:
    """Extends the leases of the batches a drain holds, every third of the lease, while the
    process runs. A process that stops (frozen, killed) stops it too: its leases lapse."""

    def __init__(self, url: str, lease: timedelta, lease_clock) -> None:
        self._url = url
        self._lease = lease
        self._clock = lease_clock
        self._held: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
        self._thread.start()

    def hold(self, batch_id: int) -> None:
        with self._lock:
            self._held.add(batch_id)

    def release(self, batch_id: int) -> None:
        with self._lock:
            self._held.discard(batch_id)

    def _run(self) -> None:
        # autocommit: each extension is committed by the server with its statement, so a
        # process frozen at any instant holds no row lock that would keep others waiting
        with psycopg.connect(self._url, autocommit=True) as conn:
            while not self._stop.wait(self._lease.total_seconds() / 3):
                with self._lock:
                    held = sorted(self._held)
                if held:
                    extend_leases(conn, held, self._clock() + self._lease)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
