"""Replica proposals per metric, after the HPA's ``replica_calculator.go``.

For per-replica values (pods metrics):

* ready replicas with a value form the base: ``usage_ratio = mean(values) / target``;
* with no missing and no not-yet-ready replicas, a ratio within ``tolerance`` of 1 keeps the
  current count, otherwise the proposal is ``ceil(usage_ratio * ready_with_value)``;
* replicas without a value count as 100% of target when scaling down and 0% when scaling up;
* not-yet-ready replicas count as 0% on scale-up only (their own values are ignored);
* the ratio is then re-computed; if it is in tolerance or flips direction, the count is kept.

Single values (object/external metrics): ``value`` and ``utilization`` give
``ceil(value/target * ready)``; ``average_value`` is a total spread over the replicas,
``ceil(value/target)`` with the tolerance checked on ``value / (target * current)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scalewise.policy.config import MetricTarget
from scalewise.policy.readings import MetricReading, ReplicaInfo


@dataclass(frozen=True)
class MetricProposal:
    """What one metric proposes; ``replicas`` is None when the read failed."""

    name: str
    replicas: int | None
    reason: str  # scale_up, scale_down, within_tolerance, direction_flip, failed
    usage_ratio: float | None = None  # raw usage / target, before fills (drives panic detection)
    value: float | None = None  # the aggregate compared with the activation threshold
    error: str | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.replicas is not None


def _ceil(x: float) -> int:
    # Guard float noise such as 3.0000000000000004 -> 4 (the HPA computes on float64 as well,
    # but the noise there comes from the same source; we round to 9 decimals first).
    return math.ceil(round(x, 9))


def _direction(ratio: float) -> int:
    return 1 if ratio > 1.0 else (-1 if ratio < 1.0 else 0)


def _result(name: str, current: int, proposal: int, ratio: float, value: float, detail: str) -> MetricProposal:
    if proposal > current:
        reason = "scale_up"
    elif proposal < current:
        reason = "scale_down"
    else:
        reason = "within_tolerance"
    return MetricProposal(name, proposal, reason, ratio, value, detail=detail)


def failed(name: str, error: str, detail: str = "") -> MetricProposal:
    return MetricProposal(name, None, "failed", error=error, detail=detail)


def aggregate_value(metric: MetricTarget, reading: MetricReading) -> float | None:
    """The single number compared with the activation threshold (sum for 'value', else mean)."""
    if not reading.ok:
        return None
    if reading.value is not None:
        return reading.value
    values = list((reading.values or {}).values())
    if not values:
        return None
    return sum(values) if metric.type == "value" else sum(values) / len(values)


def _single(
    metric: MetricTarget, value: float, current: int, ready: int, tolerance: float, total_mode: bool
) -> MetricProposal:
    name, target = metric.name, metric.target
    if total_mode:  # average_value of an aggregate: a total spread over the replicas
        if current == 0:
            return _result(name, current, _ceil(value / target), value / target, value, "from zero")
        ratio = value / (target * current)
        if abs(1.0 - ratio) <= tolerance:
            return MetricProposal(name, current, "within_tolerance", ratio, value, detail=f"ratio={ratio:.4g}")
        proposal = _ceil(value / target)
        return _result(name, current, proposal, ratio, value, f"ratio={ratio:.4g} total={value:.6g}")
    ratio = value / target
    if current == 0:
        return _result(name, current, _ceil(ratio), ratio, value, "from zero")
    if abs(1.0 - ratio) <= tolerance:
        return MetricProposal(name, current, "within_tolerance", ratio, value, detail=f"ratio={ratio:.4g}")
    if ready <= 0:
        return failed(name, "no_ready_replicas", "no ready replica to base the proposal on")
    proposal = _ceil(ratio * ready)
    if (ratio > 1 and proposal < current) or (ratio < 1 and proposal > current):
        return MetricProposal(
            name, current, "direction_flip", ratio, value, detail=f"ratio={ratio:.4g} but {proposal} replicas"
        )
    return _result(name, current, proposal, ratio, value, f"ratio={ratio:.4g} ready={ready}")


def propose(
    metric: MetricTarget,
    reading: MetricReading,
    current: int,
    ready: int,
    tolerance: float,
    replicas: Sequence[ReplicaInfo] | None = None,
) -> MetricProposal:
    """The replica count this metric alone proposes (unclamped), HPA semantics."""
    name = metric.name
    if not reading.ok:
        return failed(name, reading.error or "source", reading.detail)
    if reading.value is not None:
        return _single(metric, reading.value, current, ready, tolerance, metric.type == "average_value")
    values = dict(reading.values or {})
    if metric.type == "value":  # a per-replica breakdown of a plain value: its sum is the value
        if not values:
            return failed(name, "no_replicas", "no per-replica value")
        return _single(metric, sum(values.values()), current, ready, tolerance, False)

    target = metric.target
    if replicas is not None:
        ready_ids = [r.id for r in replicas if r.ready]
        unready_count = sum(1 for r in replicas if not r.ready)
        ready_values = [values[i] for i in ready_ids if i in values]
        missing_count = sum(1 for i in ready_ids if i not in values)
    else:
        ready_values = [values[k] for k in sorted(values)]
        unready_count = 0
        missing_count = max(0, ready - len(ready_values))
    if not ready_values:
        return failed(name, "no_ready_replicas", "no value for any ready replica")

    usage = sum(ready_values) / len(ready_values)
    ratio = usage / target
    agg = usage
    base = len(ready_values)
    scale_up_with_unready = unready_count > 0 and ratio > 1.0
    if not scale_up_with_unready and missing_count == 0:
        if abs(1.0 - ratio) <= tolerance:
            return MetricProposal(name, current, "within_tolerance", ratio, agg, detail=f"ratio={ratio:.4g}")
        proposal = _ceil(ratio * base)
        if (ratio > 1 and proposal < current) or (ratio < 1 and proposal > current):
            return MetricProposal(
                name,
                current,
                "direction_flip",
                ratio,
                agg,
                detail=f"ratio={ratio:.4g} but {proposal} replicas",
            )
        return _result(name, current, proposal, ratio, agg, f"ratio={ratio:.4g} ready={base}")

    filled = list(ready_values)
    if missing_count:
        # Missing replicas: 100% of target when scaling down, 0% when scaling up.
        filled.extend([target if ratio < 1.0 else 0.0] * missing_count)
    if scale_up_with_unready:
        filled.extend([0.0] * unready_count)
    new_ratio = (sum(filled) / len(filled)) / target
    detail = (
        f"ratio={ratio:.4g} -> {new_ratio:.4g} with {missing_count} missing, "
        f"{unready_count if scale_up_with_unready else 0} unready at 0%"
    )
    if abs(1.0 - new_ratio) <= tolerance:
        return MetricProposal(name, current, "within_tolerance", ratio, agg, detail=detail)
    if _direction(new_ratio) != _direction(ratio):
        return MetricProposal(name, current, "direction_flip", ratio, agg, detail=detail)
    proposal = _ceil(new_ratio * len(filled))
    if (new_ratio < 1 and proposal > current) or (new_ratio > 1 and proposal < current):
        return MetricProposal(name, current, "direction_flip", ratio, agg, detail=detail + f" but {proposal}")
    return _result(name, current, proposal, ratio, agg, detail)


@dataclass(frozen=True)
class Combined:
    replicas: int | None  # None when every metric failed
    reason: str
    metric: str | None
    detail: str = ""


def combine(proposals: Sequence[MetricProposal], current: int) -> Combined:
    """Largest proposal wins; with any failed metric a scale-down is refused (the count is held)."""
    ok = [p for p in proposals if p.ok]
    failed_names = [p.name for p in proposals if not p.ok]
    if not ok:
        return Combined(None, "missing_metrics_hold", None, "every metric read failed")
    best = ok[0]
    for p in ok[1:]:
        if (p.replicas or 0) > (best.replicas or 0):
            best = p
    assert best.replicas is not None
    if failed_names and best.replicas < current:
        return Combined(
            current,
            "missing_metrics_hold",
            best.name,
            f"{best.name} proposes {best.replicas} but {', '.join(failed_names)} failed: no scale-down",
        )
    if len(ok) > 1 and best.replicas == current:
        # All metrics agree on no change; report the first non-trivial reason (e.g. direction_flip).
        reason = next((p.reason for p in ok if p.replicas == current and p.reason != "within_tolerance"), best.reason)
        return Combined(current, reason, best.name, best.detail)
    return Combined(best.replicas, best.reason, best.name, best.detail)
