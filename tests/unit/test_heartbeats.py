"""flows.heartbeats: a sync flow run's end no longer joins its heartbeat thread, and heartbeats still go
out while the run lives and stop after it. Prefect's own context manager, driven with a stand-in engine
(no server)."""

from __future__ import annotations

import inspect
import threading
import time
from typing import Any

import flows  # noqa: F401  (importing the package applies the change)
from flows.heartbeats import end_runs_without_joining_heartbeats


class StandInEngine:
    """What ``_send_heartbeats`` uses of a flow run engine."""

    heartbeat_seconds = 30
    flow_run = None

    def __init__(self) -> None:
        self.beats: list[float] = []
        self.logger = __import__("logging").getLogger("test.heartbeats")

    def _build_heartbeat_event_template(self) -> tuple[dict[str, str], list[Any]]:
        return {"prefect.resource.id": "prefect.flow-run.test"}, []

    def _emit_flow_run_heartbeat(self, resource: dict[str, str], related: list[Any]) -> None:
        self.beats.append(time.monotonic())


def wait_for(condition: Any, deadline_s: float = 30.0) -> bool:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_the_sync_engine_uses_heartbeats_without_join() -> None:
    from prefect import flow_engine

    assert end_runs_without_joining_heartbeats()  # idempotent: already applied by importing flows
    patched = flow_engine._send_heartbeats
    assert getattr(patched, "keywords", {}) == {"join_on_exit": False}
    original = patched.func  # type: ignore[attr-defined]
    # the parameter this relies on is still Prefect's, defaulting to a join (what the async engine turns off)
    assert inspect.signature(original).parameters["join_on_exit"].default is True


def test_heartbeats_go_out_while_the_run_lives_and_stop_after_it() -> None:
    from prefect import flow_engine

    engine = StandInEngine()
    before = set(threading.enumerate())
    with flow_engine._send_heartbeats(engine):  # type: ignore[arg-type]
        assert wait_for(lambda: len(engine.beats) >= 1), "no heartbeat was sent while the run lived"
        beat_threads = [t for t in threading.enumerate() if t not in before]
        assert beat_threads, "no heartbeat thread"
    assert wait_for(lambda: not any(t.is_alive() for t in beat_threads)), "the heartbeat thread did not stop"
    assert all(t.daemon for t in beat_threads)
    assert len(engine.beats) == 1  # none after the run ended (the next one would be 30 s later anyway)
