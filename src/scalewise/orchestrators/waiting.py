"""The bounded wait every adapter's ``wait_converged`` runs (no SDK): read until settled or the deadline."""

from __future__ import annotations

import time
from collections.abc import Callable

from scalewise.errors import ConvergenceTimeout, TransientError
from scalewise.model import ConvergeResult, WorkloadState
from scalewise.orchestrators.base import ProgressFn


def poll_converged(
    read: Callable[[], WorkloadState],
    settled: Callable[[WorkloadState, float], ConvergeResult | None],
    *,
    start: float,
    timeout_s: float,
    poll_s: float,
    on_progress: ProgressFn | None,
    progress: Callable[[WorkloadState], str],
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    what: str = "",
) -> ConvergeResult:
    """The loop of ``wait_converged``: ``read`` (each state goes to ``on_progress``) until
    ``settled(state, elapsed)`` returns a result; past ``start + timeout_s`` a ``timeout`` result
    whose detail is ``after <timeout_s>s: <progress(state)>``. Sleeps ``poll_s`` between reads,
    never past the deadline. What counts as settled is each adapter's own.

    A read that fails with a :class:`TransientError` (the engine restarting, a dropped connection)
    is absorbed until the deadline: the wait is bounded by its own limit and never retried. If no
    read succeeded by then, :class:`ConvergenceTimeout` names the last error. ``clock`` and ``sleep``
    are the time source (a fake orchestrator passes a virtual one); ``what`` prefixes that error."""
    deadline = start + max(0.0, timeout_s)
    state: WorkloadState | None = None
    while True:
        failure: TransientError | None = None
        try:
            state = read()
        except TransientError as exc:
            failure = exc
        elapsed = clock() - start
        if failure is None and state is not None:
            if on_progress is not None:
                on_progress(state)
            result = settled(state, elapsed)
            if result is not None:
                return result
        now = clock()
        if now >= deadline:
            if state is None:
                raise ConvergenceTimeout(
                    (f"{what}: " if what else "")
                    + f"no state read within {timeout_s:g}s"
                    + (f" (last error: {failure})" if failure else "")
                )
            last_error = f"; last read failed: {failure}" if failure is not None else ""
            return ConvergeResult(
                converged=False,
                state=state,
                reason="timeout",
                detail=f"after {timeout_s:g}s: {progress(state)}{last_error}",
                elapsed_s=elapsed,
            )
        sleep(max(0.0, min(poll_s, deadline - now)))


__all__ = ["poll_converged"]
