"""Replica proposals per metric, after the HPA's ``replica_calculator.go``.

For per-replica values (pods metrics):

* ready replicas with a value form the base: ``usage_ratio = mean(values) / target``;
* with no missing and no not-yet-ready replicas, a ratio within the tolerance keeps the current
  count, otherwise the proposal is ``ceil(usage_ratio * ready_with_value)`` (no other check);
* replicas without a value count as 0% when scaling up and, when scaling down, as the target
  (``max(100%, target)`` for ``utilization``);
* not-yet-ready replicas count as 0% on scale-up only (their own values are ignored); readiness
  only matters for ``utilization`` metrics (the HPA discounts unready pods for CPU only): for the
  others an unready replica's value counts like a ready one's; a *pending* replica is unready for
  every metric;
* only when something was filled in is the ratio re-computed; if it is then in tolerance or flips
  direction, the count is kept.

Tolerance: ``1 - down <= ratio <= 1 + up`` (per-direction, Kubernetes 1.33+), compared after the
same rounding as the ceiling, so 3 replicas at exactly 110% with a tolerance of 0.1 hold at 3.

Single values (object/external metrics): ``value`` and ``utilization`` give
``ceil(value/target * ready)``; ``average_value`` is a total spread over the replicas,
``ceil(value/target)`` with the tolerance checked on ``value / (target * current)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from scalewise.policy.config import MetricTarget
from scalewise.policy.readings import MetricReading, ReplicaInfo
from scalewise.policy.rounding import Band, ceil_rounded


@dataclass(slots=True)
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


#: (scale-up tolerance, scale-down tolerance); a plain float means the same both ways.
Tolerances = tuple[float, float]


# Guard float noise such as 3.0000000000000004 -> 4 (the HPA computes on float64 as well, but the
# noise there comes from the same source): ``ceil(round(x, 9))``.
_ceil = ceil_rounded


def within(ratio: float, tolerance: float | Tolerances) -> bool:
    """``1 - down <= ratio <= 1 + up``, with the ceiling's rounding (1.1 is within 0.1 of 1)."""
    band = _BANDS.get(tolerance)  # a float or a pair: both are keys
    if band is None:
        if len(_BANDS) > 4096:  # config values only, but never unbounded
            _BANDS.clear()
        up, down = (tolerance, tolerance) if isinstance(tolerance, float | int) else tolerance
        band = _BANDS[tolerance] = Band(round(1.0 - down, 9), round(1.0 + up, 9))
    return ratio in band


#: [1 - down, 1 + up], rounded like the ratios, by tolerance (a float or (up, down)): the same few every tick.
_BANDS: dict[float | Tolerances, Band] = {}


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
    metric: MetricTarget, value: float, current: int, ready: int, tolerance: float | Tolerances, total_mode: bool
) -> MetricProposal:
    name, target = metric.name, metric.target
    if total_mode:  # average_value of an aggregate: a total spread over the replicas
        if current == 0:
            return _result(name, current, _ceil(value / target), value / target, value, "from zero")
        ratio = value / (target * current)
        if within(ratio, tolerance):
            return MetricProposal(name, current, "within_tolerance", ratio, value, detail=f"ratio={ratio:.4g}")
        proposal = _ceil(value / target)
        return _result(name, current, proposal, ratio, value, f"ratio={ratio:.4g} total={value:.6g}")
    ratio = value / target
    if current == 0:
        return _result(name, current, _ceil(ratio), ratio, value, "from zero")
    if within(ratio, tolerance):
        return MetricProposal(name, current, "within_tolerance", ratio, value, detail=f"ratio={ratio:.4g}")
    if ready <= 0:
        return failed(name, "no_ready_replicas", "no ready replica to base the proposal on")
    proposal = _ceil(ratio * ready)  # HPA: ceil(ratio x ready), nothing filled in, no direction check
    return _result(name, current, proposal, ratio, value, f"ratio={ratio:.4g} ready={ready}")


def _group(
    metric: MetricTarget, values: dict[str, float], ready: int, replicas: Sequence[ReplicaInfo] | None
) -> tuple[list[float], int, int]:
    """(values of the replicas that count as ready, missing count, unready count): HPA ``groupPods``.

    Readiness is only considered for ``utilization`` metrics (CPU in the HPA); a pending replica is
    unready for every metric. A value from a replica that is not listed (already gone) is ignored.
    """
    if replicas is None:
        known = [values[k] for k in sorted(values)]
        return known, max(0, ready - len(known)), 0
    by_readiness = metric.type == "utilization"
    ready_values: list[float] = []
    missing = unready = 0
    for r in replicas:
        if r.pending:
            unready += 1
        elif r.id not in values:
            missing += 1
        elif by_readiness and not r.ready:
            unready += 1
        else:
            ready_values.append(values[r.id])
    return ready_values, missing, unready


def _missing_fill(metric: MetricTarget, ratio: float) -> float:
    """The value of a replica without one: 0% on scale-up; on scale-down the target, or
    ``max(100%, target)`` for utilization (HPA ``fallbackUtilization``)."""
    if ratio > 1.0:
        return 0.0
    return max(100.0, metric.target) if metric.type == "utilization" else metric.target


def propose(
    metric: MetricTarget,
    reading: MetricReading,
    current: int,
    ready: int,
    tolerance: float | Tolerances,
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

    ready_values, missing_count, unready_count = _group(metric, values, ready, replicas)
    if not ready_values:
        return failed(name, "no_ready_replicas", "no value for any ready replica")
    target = metric.target
    usage = sum(ready_values) / len(ready_values)
    ratio = usage / target
    scale_up_with_unready = unready_count > 0 and ratio > 1.0
    if not scale_up_with_unready and missing_count == 0:
        if within(ratio, tolerance):
            return MetricProposal(name, current, "within_tolerance", ratio, usage, detail=f"ratio={ratio:.4g}")
        proposal = _ceil(ratio * len(ready_values))  # nothing filled in: no direction check (HPA)
        return _result(name, current, proposal, ratio, usage, f"ratio={ratio:.4g} ready={len(ready_values)}")

    filled = list(ready_values)
    if missing_count and ratio != 1.0:
        filled.extend([_missing_fill(metric, ratio)] * missing_count)
    if scale_up_with_unready:
        filled.extend([0.0] * unready_count)
    new_ratio = (sum(filled) / len(filled)) / target
    detail = (
        f"ratio={ratio:.4g} -> {new_ratio:.4g} with {missing_count} missing, "
        f"{unready_count if scale_up_with_unready else 0} unready at 0%"
    )
    if within(new_ratio, tolerance):
        return MetricProposal(name, current, "within_tolerance", ratio, usage, detail=detail)
    if (ratio < 1.0 < new_ratio) or (ratio > 1.0 > new_ratio):
        return MetricProposal(name, current, "direction_flip", ratio, usage, detail=detail)
    proposal = _ceil(new_ratio * len(filled))
    if (new_ratio < 1 and proposal > current) or (new_ratio > 1 and proposal < current):
        return MetricProposal(name, current, "direction_flip", ratio, usage, detail=detail + f" but {proposal}")
    return _result(name, current, proposal, ratio, usage, detail)


@dataclass(slots=True)
class Combined:
    replicas: int | None  # None when every metric failed
    reason: str
    metric: str | None
    detail: str = ""


def combine(proposals: Sequence[MetricProposal], current: int) -> Combined:
    """Largest proposal wins; with any failed metric a scale-down is refused (the count is held)."""
    if len(proposals) == 1:  # the common case, same result as below
        only = proposals[0]
        if only.replicas is None:
            return Combined(None, "missing_metrics_hold", None, "every metric read failed")
        return Combined(only.replicas, only.reason, only.name, only.detail)
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
