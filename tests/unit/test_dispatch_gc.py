"""A drain keeps the process's objects out of garbage collection, and hands back only its own."""

from __future__ import annotations

import gc
import threading

from lifecycle.delivery.dispatch import _long_lived_out_of_gc


def test_a_drain_freezes_and_unfreezes_what_it_froze():
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    with _long_lived_out_of_gc():
        assert gc.get_freeze_count() > 0
        with _long_lived_out_of_gc():  # a second channel's drain beside it
            pass
        assert gc.get_freeze_count() > 0, "the first drain's objects were handed back early"
    assert gc.get_freeze_count() == 0


def test_objects_frozen_before_the_drain_stay_frozen():
    """scripts/run_daily.py freezes what each day leaves: a dispatch inside the day must not
    hand those back, or every later full collection walks them again."""
    gc.unfreeze()
    held = [threading.Lock() for _ in range(10)]  # noqa: F841 - kept alive while frozen
    gc.freeze()
    before = gc.get_freeze_count()
    try:
        with _long_lived_out_of_gc():
            pass
        assert gc.get_freeze_count() >= before
    finally:
        gc.unfreeze()
