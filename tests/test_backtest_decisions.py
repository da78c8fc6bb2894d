"""The backtest's decisions, record by record: pinned for a fixed input, and each one replays.

``decide()`` builds its records on a fast path (see ``policy.trusted``); this pins what it produces.
For a fixed synthetic trace and several policies (HPA defaults, predictive and forecast-only, burst with
schedules and per-direction tolerances, scale to zero, a per-replica utilization metric) every
decision the simulator gets from the autoscaler is serialised and hashed; the hashes of each block of
:data:`CHUNK` ticks are compared with ``tests/data/backtest_decisions.json``. A change of a decision's
content (count, reason, steps and their details, inputs, state) fails here, naming the policy and the
ticks. When a change is intended, regenerate the file (``python -m tests.test_backtest_decisions``)
and say why in the commit.

Each decision is also stored as a :class:`DecisionRecord`, read back from JSON and replayed: the
replay equals the decision (the records built without validation equal validated ones).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from scalewise import autoscaler
from scalewise.backtest import ServiceModel, Trace, backtest
from scalewise.policy.decide import Decision, PolicyState
from scalewise.policy.record import DecisionRecord, replay
from scalewise.spec import WorkloadSpec, parse_workload

GOLDEN = Path(__file__).parent / "data" / "backtest_decisions.json"
CHUNK = 100
RPS_QUERY = 'sum(rate(http_requests_total{service="{workload}"}[1m]))'
CPU_QUERY = 'rate(cpu_seconds_total{service="{workload}"}[1m])'
PREDICTIVE = {"metric": "rps", "season": "1h", "seasons": 3, "step": "60s", "horizon": "90s", "margin": 0.1}


def trace() -> Trace:
    """Eight hours per minute: an hourly rise, a slow daily-like swell, bursts and idle gaps (no RNG)."""
    counts = []
    for minute in range(8 * 60):
        phase = minute % 60
        base = 30 + 20 * math.sin(2 * math.pi * minute / 480)
        rise = 200 if 40 <= phase < 50 else 0
        burst = 400 if (minute * 7919) % 97 == 0 else 0
        idle = 150 <= minute < 175 or 400 <= minute < 420
        counts.append(0.0 if idle else float(round(base + rise + burst)))
    return Trace("golden", 60.0, np.asarray(counts, dtype=np.float64))


def workload(name: str, lo: int = 1, hi: int = 60, **auto: Any) -> WorkloadSpec:
    metrics = auto.pop("metrics", [{"name": "rps", "query": RPS_QUERY, "type": "average_value", "target": 0.7}])
    return parse_workload({
        "name": name, "target": "docker", "image": "scalewise/busybox:1", "replicas": {"min": lo, "max": hi},
        "autoscaling": {"metrics": metrics, **auto},
    })


def policies() -> dict[str, WorkloadSpec]:
    rps = {"name": "rps", "query": RPS_QUERY, "type": "average_value", "target": 0.7, "activation": 0.05}
    cpu = {"name": "cpu", "query": CPU_QUERY, "type": "utilization", "target": 70, "per_replica_label": "pod"}
    return {
        "hpa": workload("hpa"),
        "predictive": workload("predictive", predictive=PREDICTIVE),
        "forecast-only": workload("forecast-only", predictive={**PREDICTIVE, "mode": "forecast_only"}),
        "burst": workload(
            "burst",
            burst={"panic_threshold": 1.8, "panic_window": "60s"},
            schedules=[{"cron": "0 2 * * *", "duration": "30m", "timezone": "UTC", "min": 8, "max": 40}],
            behavior={
                "scale_up": {"stabilization_window": "30s", "tolerance": 0.05,
                             "policies": [{"type": "pods", "value": 3, "period": "30s"}]},
                "scale_down": {"stabilization_window": "120s", "tolerance": 0.2,
                               "policies": [{"type": "percent", "value": 50, "period": "60s"}], "select_policy": "min"},
            },
        ),
        "zero": workload("zero", lo=0, metrics=[rps], scale_to_zero={"enabled": True, "cooldown": "5m"}),
        "utilization": workload("utilization", hi=80, metrics=[cpu, {**rps, "target": 1.0}]),
    }


MODEL = ServiceModel(capacity=1.0, startup_s=60, start=datetime(2026, 3, 2, tzinfo=UTC))


@contextmanager
def recording() -> Iterator[dict[str, list[tuple[PolicyState, Decision]]]]:
    """The decisions the simulator gets from the autoscaler's real evaluation, by workload."""
    seen: dict[str, list[tuple[PolicyState, Decision]]] = {}
    real = autoscaler.evaluate

    def evaluate(spec: WorkloadSpec, *args: Any, **kwargs: Any) -> autoscaler.Evaluation:
        ev = real(spec, *args, **kwargs)
        seen.setdefault(spec.name, []).append((ev.state_before, ev.decision))
        return ev

    autoscaler.evaluate = evaluate
    try:
        yield seen
    finally:
        autoscaler.evaluate = real


def digests(decisions: list[tuple[PolicyState, Decision]]) -> list[str]:
    out = []
    for start in range(0, len(decisions), CHUNK):
        h = hashlib.sha256()
        for _, decision in decisions[start:start + CHUNK]:
            h.update(decision.model_dump_json().encode())
        out.append(h.hexdigest()[:16])
    return out


Recorded = tuple[dict[str, WorkloadSpec], dict[str, list[tuple[PolicyState, Decision]]], dict[str, Any]]


def run() -> Recorded:
    chosen = policies()
    with recording() as seen:
        result = backtest(trace(), chosen["hpa"], MODEL, chosen)
    return chosen, seen, result.scores


def golden() -> dict[str, Any]:
    _, seen, scores = run()
    return {
        "chunk": CHUNK,
        "decisions": {name: digests(ds) for name, ds in seen.items()},
        "reasons": {name: dict(sorted(s["reasons"].items())) for name, s in scores.items() if name != "oracle"},
    }


@pytest.fixture(scope="module")
def recorded() -> Recorded:
    return run()


def test_policies_reach_their_cases(recorded: Recorded) -> None:
    """The fixed input exercises what it pins (else the pin would prove little)."""
    _, _, scores = recorded
    reasons = {name: s["reasons"] for name, s in scores.items() if name != "oracle"}
    assert {"scale_up", "stabilized_down", "within_tolerance"} <= reasons["hpa"].keys()
    assert reasons["predictive"].get("forecast_floor", 0) > 0
    assert scores["forecast-only"]["forecast_steps"].get("forecast_only", 0) > 0
    assert {"panic_scale_up", "schedule_floor"} <= reasons["burst"].keys()
    assert {"activation_zero", "activation_start"} <= reasons["zero"].keys()
    assert reasons["utilization"].get("scale_up", 0) > 0


def test_decisions_match_the_pinned_ones(recorded: Recorded) -> None:
    _, seen, scores = recorded
    pinned = json.loads(GOLDEN.read_text())
    assert pinned["chunk"] == CHUNK
    for name, chunks in pinned["decisions"].items():
        got = digests(seen[name])
        assert len(got) == len(chunks), name
        for index, (want, have) in enumerate(zip(chunks, got, strict=True)):
            first = seen[name][index * CHUNK][1]
            assert have == want, f"{name}: decisions {index * CHUNK}..{(index + 1) * CHUNK - 1} differ; first: {first}"
    assert {n: dict(sorted(s["reasons"].items())) for n, s in scores.items() if n != "oracle"} == pinned["reasons"]


def test_every_decision_replays_from_its_json_record(recorded: Recorded) -> None:
    chosen, seen, _ = recorded
    for name, decisions in seen.items():
        auto = chosen[name].autoscaling
        assert auto is not None
        for before, decision in decisions[::3]:
            record = DecisionRecord.of(auto, before, decision, workload=name)
            stored = DecisionRecord.model_validate_json(record.model_dump_json())
            # (not `stored == record`: a spec's equality includes its cached config hash, set on one side only)
            assert stored.spec.model_dump() == auto.model_dump() and stored.config_version == auto.config_hash()
            assert stored.state_before == before and stored.decision == decision
            assert replay(stored) == decision
            assert Decision.model_validate(decision.model_dump()) == decision


if __name__ == "__main__":  # regenerate the pinned file (only for an intended change)
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(json.dumps(golden(), indent=1) + "\n")
    print(f"wrote {GOLDEN}")
