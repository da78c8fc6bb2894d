"""Pure policy throughput: decisions per second (1 and 3 metrics) and one tick over 1,000 workloads.

Run: ``.venv/bin/python bench/policy_bench.py``; prints JSON.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from scalewise.policy.config import AutoscalingSpec
from scalewise.policy.decide import PolicyState, decide
from scalewise.policy.readings import MetricReading

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def metric(name: str, type_: str = "average_value", target: float = 50) -> dict[str, object]:
    return {"name": name, "query": f'sum(x{{workload="{{workload}}",m="{name}"}})', "type": type_, "target": target}


SINGLE = AutoscalingSpec.model_validate({"metrics": [metric("cpu", "utilization")]})
TRIPLE = AutoscalingSpec.model_validate(
    {
        "metrics": [metric("cpu", "utilization"), metric("rps", "value", 100), metric("queue", "average_value", 10)],
        "burst": {"panic_threshold": 2.0},
        "schedules": [{"cron": "0 8 * * 1-5", "duration": "10h", "timezone": "Europe/Paris", "min": 2}],
    }
)


def readings(spec: AutoscalingSpec, i: int, now: datetime) -> list[MetricReading]:
    out = []
    for k, m in enumerate(spec.metrics):
        if m.type == "utilization":
            values = {f"r{j}": float(30 + (i * 7 + j * 13 + k) % 60) for j in range(4)}
            out.append(MetricReading.per_replica(m.name, now, values))
        else:
            out.append(MetricReading.success(m.name, now, float((i * 37 + k * 11) % 500)))
    return out


def warm_state(spec: AutoscalingSpec, n: int = 20) -> PolicyState:
    """A state after ``n`` ticks of 15 s, so stabilization has a realistic history."""
    state = PolicyState()
    current = 4
    for t in range(n):
        now = T0 + timedelta(seconds=15 * t)
        d = decide(spec, (1, 50), readings(spec, t, now), current, current, state, now)
        state, current = d.state, d.desired
    return state


def rate(spec: AutoscalingSpec, seconds: float = 2.0) -> dict[str, float]:
    state = warm_state(spec)
    now = T0 + timedelta(seconds=15 * 21)
    inputs = [readings(spec, i, now) for i in range(64)]
    n = 0
    wall0, cpu0 = time.perf_counter(), time.process_time()
    while time.perf_counter() - wall0 < seconds:
        for r in inputs:
            decide(spec, (1, 50), r, 4, 4, state, now)
        n += len(inputs)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return {
        "decisions": n,
        "per_second": round(n / wall),
        "us_per_decision": round(wall / n * 1e6, 1),
        "cpu_s": round(cpu, 3),
    }


def tick(workloads: int = 1000) -> dict[str, float | str]:
    specs = [SINGLE if i % 2 else TRIPLE for i in range(workloads)]
    states = [warm_state(s, 10) for s in specs[:2]] * (workloads // 2)
    now = T0 + timedelta(seconds=15 * 11)
    inputs = [readings(s, i, now) for i, s in enumerate(specs)]
    wall0, cpu0 = time.perf_counter(), time.process_time()
    changed = 0
    for spec, state, r in zip(specs, states, inputs, strict=True):
        d = decide(spec, (1, 50), r, 4, 4, state, now)
        changed += d.changed
        d.state.model_dump_json()  # the caller persists the state: include serialisation
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return {
        "workloads": workloads,
        "mix": "half 1-metric, half 3-metric+burst+schedule",
        "wall_ms": round(wall * 1000, 1),
        "cpu_ms": round(cpu * 1000, 1),
        "changed": changed,
    }


def main() -> None:
    result = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "single_metric": rate(SINGLE),
        "three_metrics": rate(TRIPLE),
        "tick_1000_workloads": tick(1000),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
