"""The autoscale evaluation service (``scalewise.autoscaler.evaluate_workload``) with plain reads, and
the interval loop shared by the watcher and the fast loop (``scalewise.ticker``). Seconds, no Prefect."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from scalewise import autoscaler, ticker
from scalewise.autoscaler import Evaluation, Held, Observed, Reads
from scalewise.hold import make_hold
from scalewise.model import WorkloadState
from scalewise.policy.decide import PolicyState
from scalewise.policy.forecast import Forecast
from scalewise.policy.readings import MetricReading, ReplicaInfo
from scalewise.spec import WorkloadSpec

NOW = datetime(2026, 3, 2, 12, tzinfo=UTC)
LISTED = [ReplicaInfo(id="web-1"), ReplicaInfo(id="web-2")]
FORECAST = Forecast(value=90.0, horizon=90, forecaster="seasonal_window")
PREDICTIVE = {"metric": "rps", "season": "1h", "seasons": 3, "step": "60s", "horizon": "90s"}


def make_spec(**auto: Any) -> WorkloadSpec:
    metric = {"name": "rps", "query": "sum(rate(x[1m]))", "type": "average_value", "target": 10}
    return WorkloadSpec.model_validate({
        "name": "web", "target": "docker", "image": "scalewise/busybox:1", "replicas": {"min": 1, "max": 10},
        "autoscaling": {"metrics": [metric], **auto},
    })


def state(replicas: int = 2) -> WorkloadState:
    return WorkloadState(name="web", target="docker", desired_replicas=replicas, ready_replicas=replicas,
                         image="scalewise/busybox:1", version="1")


class Recorder:
    """Plain reads that record what was read, in order; ``fail`` names the reads that raise."""

    def __init__(self, *fail: str, rps: float = 40.0, hold: Any = None) -> None:
        self.fail, self.rps, self.held = set(fail), rps, hold
        self.calls: list[str] = []

    def _call(self, what: str, value: Any) -> Any:
        self.calls.append(what)
        if what in self.fail:
            raise ConnectionError(f"{what} unavailable")
        return value

    def readings(self, listed: Any) -> list[MetricReading]:
        assert listed == LISTED  # the metrics are read with the orchestrator's listing
        return [MetricReading(name="rps", value=self.rps, timestamp=NOW)]

    def reads(self) -> Reads:
        return Reads(
            state=lambda _: self._call("state", None if "absent" in self.fail else state()),
            policy=lambda _: self._call("policy", None),
            hold=lambda _: self._call("hold", self.held),
            replicas=lambda _: self._call("replicas", LISTED),
            metrics=lambda _, listed: self._call("metrics", self.readings(listed)),
            forecast=lambda _, now: self._call("forecast", FORECAST),
        )


def test_a_healthy_evaluation_reads_in_order_and_decides() -> None:
    rec = Recorder()
    ev = autoscaler.evaluate_workload(make_spec(), rec.reads(), clock=lambda: NOW)
    assert isinstance(ev, Evaluation)
    assert rec.calls == ["hold", "state", "replicas", "policy", "metrics"]  # no forecast without `predictive`
    assert (ev.decision.current, ev.decision.desired, ev.decision.inputs.now) == (2, 4, NOW)
    assert ev.decision.inputs.replicas == LISTED  # the listing's readiness goes to the policy
    assert ev.record(make_spec()).workload == "web"


def test_a_predictive_workload_reads_its_forecast_at_now() -> None:
    rec = Recorder()
    ev = autoscaler.evaluate_workload(make_spec(predictive=PREDICTIVE), rec.reads(), clock=lambda: NOW)
    assert isinstance(ev, Evaluation) and rec.calls[-1] == "forecast"
    assert ev.decision.inputs.forecast is not None and ev.decision.inputs.forecast.value == 90.0


@pytest.mark.parametrize(
    ("fail", "reason", "stage", "reads", "fails_the_run"),
    [
        ("hold", "hold_state_error", None, ["hold"], False),
        ("state", "orchestrator_error", "state", ["hold", "state"], True),
        ("replicas", "orchestrator_error", "replicas", ["hold", "state", "replicas"], True),
        ("policy", "policy_state_error", "policy_state", ["hold", "state", "replicas", "policy"], True),
    ],
)
def test_a_failed_read_holds_and_reads_no_further(
    fail: str, reason: str, stage: str | None, reads: list[str], fails_the_run: bool
) -> None:
    rec = Recorder(fail)
    held = autoscaler.evaluate_workload(make_spec(), rec.reads(), clock=lambda: NOW)
    assert isinstance(held, Held)
    assert (held.result.outcome, held.result.reason, held.stage) == ("held", reason, stage)
    assert rec.calls == reads
    assert (held.error is not None) is fails_the_run
    assert held.pinned is (stage is None)  # an unreadable manual hold holds like a hold
    assert f"{fail} unavailable" in held.warning and held.result.error == f"{fail} unavailable"


def test_a_workload_not_deployed_is_skipped() -> None:
    held = autoscaler.evaluate_workload(make_spec(), Recorder("absent").reads(), clock=lambda: NOW)
    assert isinstance(held, Held) and (held.result.outcome, held.result.reason) == ("skipped", "not_deployed")
    assert held.error is None and not held.warning


def test_an_active_manual_hold_pins_the_count_and_an_expired_one_does_not() -> None:
    active = Recorder(hold=make_hold(3, 600, NOW, by="cli:alice", operation="scale"))
    held = autoscaler.evaluate_workload(make_spec(), active.reads(), clock=lambda: NOW)
    assert isinstance(held, Held) and held.pinned and active.calls == ["hold"]
    assert (held.result.reason, held.result.current, held.result.desired) == ("manual_hold", 3, 3)
    assert "autoscaler will leave web at 3" in held.result.detail and "cli:alice" in held.result.detail
    expired = Recorder(hold=make_hold(3, 600, NOW - timedelta(hours=1)))
    assert isinstance(autoscaler.evaluate_workload(make_spec(), expired.reads(), clock=lambda: NOW), Evaluation)


def test_evaluate_seeds_a_first_seen_workload_and_carries_a_persisted_state() -> None:
    spec = make_spec()
    readings = [MetricReading(name="rps", value=10.0, timestamp=NOW)]
    first = autoscaler.evaluate(spec, Observed(state(), readings, None, NOW))
    assert first.state_before == autoscaler.initial_state(spec, 2, NOW)
    later = NOW + timedelta(seconds=15)
    carried = autoscaler.evaluate(spec, Observed(state(), readings, first.decision.state, later))
    assert carried.state_before == first.decision.state
    assert autoscaler.evaluate(spec, Observed(state(), readings, PolicyState(), NOW)).state_before == PolicyState()


def test_the_ticker_counts_ticks_and_stops() -> None:
    seen: list[int] = []
    assert ticker.every(0.01, seen.append, max_ticks=3) == 3
    assert seen == [1, 2, 3]
    # A stop set from another thread (a signal handler) ends the 60 s wait after the first tick at once.
    stop = threading.Event()
    ticked = threading.Event()
    result: list[int] = []
    loop = threading.Thread(target=lambda: result.append(ticker.every(60.0, lambda n: ticked.set(), stop=stop)))
    loop.start()
    assert ticked.wait(30)
    stop.set()
    loop.join(30)  # the wait is 60 s: a loop still alive here did not stop on the event
    assert not loop.is_alive() and result == [1]
    assert ticker.every(1.0, seen.append, stop=stop) == 0  # already stopped: no tick
    assert seen == [1, 2, 3]
    with pytest.raises(ValueError, match="interval must be positive"):
        ticker.every(0, seen.append)
