"""One backtest: a trace, a workload (or a policy file), a service model; every policy scored in the same run."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from scalewise.autoscaler import prometheus_from_env
from scalewise.backtest.model import ServiceModel
from scalewise.backtest.score import score
from scalewise.backtest.simulate import Grid, Run, build_grid, oracle, simulate
from scalewise.backtest.trace import Trace, from_prometheus, load_csv
from scalewise.errors import SpecError
from scalewise.policy.config import AutoscalingSpec
from scalewise.spec import WorkloadSpec, spec_error_from_validation

#: Policies every backtest reports besides the named ones.
HPA, ORACLE, WORKLOAD = "hpa", "oracle", "workload"


def hpa_policy(auto: AutoscalingSpec) -> AutoscalingSpec:
    """The Kubernetes HPA defaults (tolerance 0.1, default behavior) on the same metrics and targets."""
    return AutoscalingSpec(metrics=list(auto.metrics))


def load_policy(path: str | Path) -> AutoscalingSpec:
    """An ``autoscaling`` block from a YAML file (the block itself, or a mapping with an ``autoscaling`` key)."""
    file = Path(path)
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SpecError(str(file), "", f"cannot read: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise SpecError(str(file), "", f"not valid YAML: {exc}") from None
    prefix = ""
    if isinstance(data, dict) and "autoscaling" in data:
        data, prefix = data["autoscaling"], "autoscaling"
    if not isinstance(data, dict):
        raise SpecError(str(file), prefix, "expected an autoscaling mapping (metrics, behavior, ...)")
    try:
        return AutoscalingSpec.model_validate(data)
    except ValidationError as exc:
        raise spec_error_from_validation(str(file), exc, prefix) from None


@dataclass
class Backtest:
    trace: Trace
    model: ServiceModel
    workload: str
    grid: Grid
    runs: dict[str, Run]
    scores: dict[str, dict[str, Any]]
    seconds: float

    def to_json(self) -> dict[str, Any]:
        simulated = sum(r.decisions for r in self.runs.values())
        return {
            "trace": self.trace.summary(),
            "workload": self.workload,
            "model": self.model.model_dump(mode="json"),
            "policies": self.scores,
            "run": {
                "grid_step_s": self.grid.step_s,
                "decisions": simulated,
                "seconds": round(self.seconds, 3),
                "decisions_per_s": round(simulated / self.seconds) if self.seconds > 0 else None,
            },
        }


def load_demand(
    trace: str | Path | None, query: str | None, start: datetime, end: datetime, step_s: float
) -> Trace:
    """The trace file, or the range query (requests/s) on the Prometheus of ``SCALEWISE_PROMETHEUS_URL``."""
    if (trace is None) == (query is None):
        raise SpecError("parameter", "trace", "give a CSV trace or a Prometheus query (exactly one)")
    if trace is not None:
        return load_csv(trace)
    source = prometheus_from_env()
    if source is None:
        raise SpecError("parameter", "prometheus-query", "set SCALEWISE_PROMETHEUS_URL to the Prometheus to read")
    try:
        return from_prometheus(source, str(query), start, end, step_s)
    finally:
        source.close()


def policies_for(workload: WorkloadSpec, policy: AutoscalingSpec | None = None) -> dict[str, WorkloadSpec]:
    """``hpa`` and ``workload`` (its own autoscaling section, or ``policy`` in its place)."""
    auto = policy or workload.autoscaling
    if auto is None:
        raise SpecError("workload", "autoscaling", f"{workload.name} has no autoscaling section (give a policy file)")
    return {
        HPA: workload.model_copy(update={"autoscaling": hpa_policy(auto)}),
        WORKLOAD: workload.model_copy(update={"autoscaling": auto}),
    }


def backtest(
    trace: Trace,
    workload: WorkloadSpec,
    model: ServiceModel,
    policies: dict[str, WorkloadSpec] | None = None,
    progress: Callable[[int], None] | None = None,
    on_start: Callable[[int], None] | None = None,
) -> Backtest:
    """Simulate every policy (default: ``hpa`` and ``workload``) and the oracle on ``trace``.

    ``on_start(total_decisions)`` is called once the grid is known; ``progress(n)`` after each batch.
    """
    chosen = policies if policies is not None else policies_for(workload)
    t0 = time.perf_counter()
    grid = build_grid(trace, model)
    if on_start is not None:
        on_start(grid.ticks * len(chosen))
    bounds = (workload.replicas.min, workload.replicas.max)
    runs = {ORACLE: oracle(grid, bounds)}
    for name, spec in chosen.items():
        runs[name] = simulate(name, spec, grid, model, progress)
    seconds = time.perf_counter() - t0
    oracle_hours = float(runs[ORACLE].provisioned.sum()) * grid.step_s / 3600
    scores = {name: score(run, grid, model.capacity, oracle_hours) for name, run in runs.items()}
    return Backtest(trace, model, workload.name, grid, runs, scores, seconds)
