"""One bounded interval loop, shared by the watcher (``scalewise watch``) and the fast autoscale loop
(``scalewise autoscaler``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


def every(
    interval_s: float,
    tick: Callable[[int], object],
    *,
    max_ticks: int | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Call ``tick(n)`` (n = 1, 2, ...) every ``interval_s`` seconds until ``stop`` is set or ``max_ticks``
    ticks ran; returns the ticks run. Ticks never overlap: one that overruns the interval delays the
    next, and the schedule restarts from there (no burst of ticks to catch up)."""
    if interval_s <= 0:
        raise ValueError("interval must be positive")
    stop = stop or threading.Event()
    ticks = 0
    next_at = time.monotonic()
    while not stop.is_set() and (max_ticks is None or ticks < max_ticks):
        ticks += 1
        tick(ticks)
        next_at += interval_s
        delay = next_at - time.monotonic()
        if delay < 0:
            next_at, delay = time.monotonic(), 0.0
        if stop.wait(delay):
            break
    return ticks
