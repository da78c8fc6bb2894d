"""A flow run's end does not wait for its heartbeat thread.

Prefect (3.9) sends a flow run's heartbeats from a thread that sleeps in whole seconds; a sync flow run
joins that thread when it ends (``prefect.flow_engine._send_heartbeats(join_on_exit=True)``), so every
sync run ends 0-1 s (0.5 s on average) after its final state was set: measured as the largest single
part of what the scale flow adds to the bare adapter call (bench/scale_flow.py). Prefect's async engine
already runs the same context manager with ``join_on_exit=False``; this makes the sync engine do the
same. The heartbeats themselves are unchanged (every ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY`` seconds while
the run lives); the thread stops at its next one-second tick, without sending another heartbeat, and
is a daemon thread, so it never holds the process up.

Applied when the ``flows`` package is imported (every process that runs a scalewise flow: the CLI,
``deployments/serve.py``, a worker loading a prefect.yaml entrypoint). If Prefect changes the
function's signature, nothing is patched (tests/unit/test_heartbeats.py then fails, to look again).
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

_MARK = "_scalewise_no_join"


def end_runs_without_joining_heartbeats() -> bool:
    """Make sync flow runs stop their heartbeat thread without joining it; whether it is in effect."""
    from prefect import flow_engine

    current: Any = flow_engine._send_heartbeats
    if getattr(current, _MARK, False):
        return True
    if "join_on_exit" not in inspect.signature(current).parameters:
        return False
    patched = functools.partial(current, join_on_exit=False)
    setattr(patched, _MARK, True)
    flow_engine._send_heartbeats = patched
    return True
