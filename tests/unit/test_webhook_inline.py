"""InlineRuns' scheduling (order per workload, the bound across workloads, claims lost to a runner,
loads that fail, shutdown) over an in-memory RunStarter; the real Prefect path is in
tests/test_webhook_e2e.py (test_inline_actions_run_in_the_receiver_in_order_with_no_runner)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from scalewise.errors import SpecError
from scalewise.webhook.config import parse_config
from scalewise.webhook.inline import InlineRuns


class Runs:
    """An Execute that records what InlineRuns asks of it; a run takes ``hold_s``."""

    def __init__(self, hold_s: float = 0.05, refuse: frozenset[str] = frozenset(),
                 unloadable: frozenset[str] = frozenset()) -> None:
        self.hold_s = hold_s
        self.refuse = refuse
        self.unloadable = unloadable
        self.claimed: list[str] = []
        self.executed: list[str] = []
        self.active = 0
        self.most_active = 0

    async def __call__(self, flow_run_id: str) -> str | None:
        if flow_run_id in self.unloadable:
            raise ValueError(f"no flow for {flow_run_id}")  # before the claim, as execute_run
        if flow_run_id in self.refuse:
            return None  # a runner claimed it first
        self.claimed.append(flow_run_id)
        self.active += 1
        self.most_active = max(self.most_active, self.active)
        await asyncio.sleep(self.hold_s)
        self.active -= 1
        self.executed.append(flow_run_id)
        return "Completed"


async def settle(inline: InlineRuns, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while inline.busy:
        assert time.monotonic() < deadline, "inline runs did not finish"
        await asyncio.sleep(0.01)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_runs_of_a_workload_execute_one_at_a_time_in_the_order_accepted() -> None:
    starter = Runs()

    async def go() -> None:
        inline = InlineRuns(starter, limit=4)
        for i in range(5):
            inline.submit("web", f"web-{i}")
        await settle(inline)
        assert [state for _, state in inline.done] == ["Completed"] * 5

    run(go())
    assert starter.executed == [f"web-{i}" for i in range(5)]
    assert starter.most_active == 1


def test_at_most_limit_workloads_run_at_once() -> None:
    starter = Runs(hold_s=0.2)

    async def go() -> None:
        inline = InlineRuns(starter, limit=2)
        for w in range(5):
            inline.submit(f"w{w}", f"w{w}-run")
        await settle(inline)

    run(go())
    assert sorted(starter.executed) == [f"w{w}-run" for w in range(5)]
    assert starter.most_active == 2


def test_a_run_taken_elsewhere_or_not_loadable_is_skipped_and_never_claimed_on_a_failed_load() -> None:
    starter = Runs(refuse=frozenset({"b"}), unloadable=frozenset({"c"}))

    async def go() -> InlineRuns:
        inline = InlineRuns(starter, limit=1)
        for run_id in ("a", "b", "c", "d"):
            inline.submit("web", run_id)
        await settle(inline)
        return inline

    inline = run(go())
    assert starter.executed == ["a", "d"]
    assert starter.claimed == ["a", "d"]  # "c" failed to load: left unclaimed, a runner takes it
    assert [run_id for run_id, _ in inline.done] == ["a", "d"]


def test_close_waits_for_the_executing_run_and_leaves_the_queued_ones() -> None:
    starter = Runs(hold_s=0.3)

    async def go() -> int:
        inline = InlineRuns(starter, limit=1)
        for run_id in ("a", "b", "c"):
            inline.submit("web", run_id)
        await asyncio.sleep(0.1)  # "a" is executing
        still = await inline.close(timeout_s=10)
        inline.submit("web", "late")  # after close: left to the runners
        await asyncio.sleep(0.05)
        return still

    assert run(go()) == 0
    assert starter.executed == ["a"] and starter.claimed == ["a"]


def test_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="limit must be at least 1"):
        InlineRuns(Runs(), limit=0)


def test_only_scaling_actions_may_run_inline_and_the_error_names_the_field() -> None:
    base: dict[str, Any] = {"callers": [{"name": "ops", "token_env": "T"}]}
    assert parse_config({**base, "run_inline": ["scale", "scale-out", "scale-in"]}).run_inline == [
        "scale", "scale-out", "scale-in"]
    with pytest.raises(SpecError) as err:
        parse_config({**base, "run_inline": ["scale", "rolling-update"]})
    assert "run_inline" in str(err.value) and "rolling-update cannot run inline" in str(err.value)
    with pytest.raises(SpecError) as err:
        parse_config({**base, "inline_runs": 0})
    assert "inline_runs" in str(err.value)
