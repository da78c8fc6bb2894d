"""serve.py's drain on SIGTERM (deployments/serve.py ``DrainingRunner``), driven without a server: the
runner's poller and its stop are stand-ins; the Prefect internals it relies on are checked to exist.
The end-to-end case (a served rollout finishes after SIGTERM) is tests/test_interrupted.py."""

from __future__ import annotations

import asyncio
import inspect
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from prefect.runner import Runner
from prefect.runner._scheduled_run_poller import ScheduledRunPoller

from tests.support.prefect_env import ROOT


@pytest.fixture(scope="module")
def serve() -> Any:
    sys.path.insert(0, str(ROOT / "deployments"))
    try:
        import serve as module  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(ROOT / "deployments"))
    return module


class StandInPoller:
    def __init__(self, in_flight: int) -> None:
        self._submitting_flow_run_ids = set(range(in_flight))
        self.stopping = False
        self.submitted: list[Any] = []

    async def _submit_scheduled_flow_runs(self, flow_run_response: list[Any], task_group: Any) -> None:
        self.submitted.extend(flow_run_response)


class Loop:
    """An event loop in a thread, as the runner's (signal handlers run on the main thread)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture()
def loop() -> Iterator[Loop]:
    running = Loop()
    yield running
    running.close()


def runner(serve: Any, loop: Loop, drain_s: float, in_flight: int) -> tuple[Any, StandInPoller, list[float]]:
    r = serve.DrainingRunner(drain_s)
    poller = StandInPoller(in_flight)
    stopped: list[float] = []

    async def astop() -> None:
        stopped.append(time.monotonic())

    r.started, r._loop, r._scheduled_run_poller, r.astop = True, loop.loop, poller, astop
    return r, poller, stopped


def wait(condition: Any, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_sigterm_takes_no_new_run_and_stops_once_the_runs_in_flight_finish(serve: Any, loop: Loop) -> None:
    r, poller, stopped = runner(serve, loop, drain_s=60, in_flight=2)
    r.handle_sigterm()
    assert poller.stopping and r.stopping  # the poll loop fetches nothing more
    # a fetch already under way when the signal came submits nothing: its runs stay Scheduled
    asyncio.run_coroutine_threadsafe(poller._submit_scheduled_flow_runs(["run"], None), loop.loop).result(10)
    assert poller.submitted == []
    r.handle_sigterm()  # again while draining: ignored (no exit, no second stop)
    time.sleep(0.6)
    assert stopped == []  # two runs still in flight
    poller._submitting_flow_run_ids.clear()  # their processes exited
    wait(lambda: stopped)
    time.sleep(0.3)
    assert len(stopped) == 1


def test_the_drain_is_bounded_then_stops_as_prefect_does(serve: Any, loop: Loop) -> None:
    r, _, stopped = runner(serve, loop, drain_s=0.5, in_flight=1)
    t0 = time.monotonic()
    r.handle_sigterm()
    wait(lambda: stopped)
    assert 0.5 <= stopped[0] - t0 < 5  # astop (Prefect's: cancels what is still running) after the drain


def test_the_prefect_internals_the_drain_uses_exist() -> None:
    """If Prefect renames them, this fails first (the drain would raise in its signal handler)."""
    for name in ("handle_sigterm", "astop", "execute_in_background"):
        assert callable(getattr(Runner, name)), name
    assert "_submitting_flow_run_ids" in inspect.getsource(ScheduledRunPoller.__init__)
    assert "self.stopping" in inspect.getsource(ScheduledRunPoller._get_and_submit_flow_runs)
    assert "self._submit_scheduled_flow_runs(" in inspect.getsource(ScheduledRunPoller._get_and_submit_flow_runs)
    assert "_scheduled_run_poller = ScheduledRunPoller(" in inspect.getsource(Runner)
