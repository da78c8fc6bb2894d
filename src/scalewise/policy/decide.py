"""``decide()``: one autoscaling decision. Pure and deterministic: no I/O, no clock, no randomness.

Order of the normalisation steps (each is recorded in ``Decision.steps``):

1. ``paused`` -> keep the current count.
2. Effective bounds: ``min = max(spec min, active schedule floors)``,
   ``max = min(spec max, active schedule ceilings)`` (a ceiling wins over a conflicting floor).
3. Readings: a missing, stale, NaN/Inf, empty (unless ``on_empty: zero``) or errored read is a
   *failed* read. Each metric proposes a count (HPA ``replica_calculator``).
4. Scale to zero (KEDA, only with ``scale_to_zero.enabled`` and an effective min of 0): at 0
   replicas, any metric above its ``activation`` threshold starts the workload; with every metric
   read and none active for ``cooldown``, the workload goes to 0.
5. A current count outside the effective bounds is moved straight into them (HPA).
6. Every read failed: hold, or the ``fallback`` count after ``failure_threshold`` such ticks.
7. Largest proposal wins; any failed metric forbids a scale-down.
8. Burst (Knative panic): a usage ratio >= ``panic_threshold`` enters panic for ``panic_window``;
   in panic, scale-up skips stabilization and rate policies and scale-down is refused.
9. Stabilization windows, then rate policies and bounds (HPA ``behavior``).

The returned ``Decision.state`` is the updated :class:`PolicyState` assuming the decided count is
applied; persist it (it is JSON-serialisable) so that restarts keep the stabilization history.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field

from scalewise.policy.behavior import (
    Recommendation,
    ScaleEvent,
    compact_recommendations,
    history_horizon,
    limit_rate,
    stabilize,
)
from scalewise.policy.calculator import MetricProposal, aggregate_value, combine, propose
from scalewise.policy.config import AutoscalingSpec
from scalewise.policy.readings import MetricReading, ReplicaInfo

#: Every code ``Decision.reason`` / ``Step.reason`` can carry.
REASONS: tuple[str, ...] = (
    "paused",
    "within_tolerance",
    "direction_flip",
    "scale_up",
    "scale_down",
    "stabilized_up",
    "stabilized_down",
    "rate_limited_up",
    "rate_limited_down",
    "scale_up_disabled",
    "scale_down_disabled",
    "clamped_max",
    "clamped_min",
    "schedule_floor",
    "schedule_ceiling",
    "missing_metrics_hold",
    "fallback",
    "activation_start",
    "activation_zero",
    "cooldown_hold",
    "zero_hold",
    "panic_scale_up",
    "panic_hold_down",
    # step-only codes
    "bounds",
    "failed",
    "panic_enter",
)


class PolicyState(BaseModel):
    """Memory between ticks; persist it between runs (``model_dump_json`` / ``model_validate_json``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    recommendations: list[Recommendation] = Field(default_factory=list)
    scale_events: list[ScaleEvent] = Field(default_factory=list)
    consecutive_failures: int = Field(default=0, ge=0)
    last_active: datetime | None = None
    inactive_since: datetime | None = None
    panic_until: datetime | None = None


class Step(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    proposal: int | None
    reason: str
    detail: str = ""


class DecisionInputs(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    bounds: tuple[int, int]
    readings: list[MetricReading]
    current: int = Field(ge=0)
    ready: int = Field(ge=0)
    replicas: list[ReplicaInfo] | None = None
    now: datetime
    config_hash: str


class Decision(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    desired: int
    current: int
    changed: bool
    reason: str
    detail: str = ""
    effective_min: int
    effective_max: int
    in_panic: bool = False
    steps: list[Step]
    inputs: DecisionInputs
    state: PolicyState

    def state_if_not_applied(self) -> PolicyState:
        """The state to persist when the scale could not be applied (drops this tick's scale event)."""
        now = self.inputs.now
        events = [e for e in self.state.scale_events if e.at != now]
        return self.state.model_copy(update={"scale_events": events})


def effective_bounds(spec: AutoscalingSpec, bounds: tuple[int, int], now: datetime) -> tuple[int, int, str]:
    """(min, max, detail) after the active schedules."""
    lo, hi = bounds
    notes: list[str] = []
    for index, sched in enumerate(spec.schedules):
        if sched.active_at(now):
            if sched.min is not None and sched.min > lo:
                lo = sched.min
            if sched.max is not None and sched.max < hi:
                hi = sched.max
            notes.append(f"schedules[{index}] active")
    if lo > hi:
        notes.append(f"floor {lo} above ceiling {hi}: ceiling wins")
        lo = hi
    return lo, hi, "; ".join(notes)


def _normalise_readings(
    spec: AutoscalingSpec, readings: Sequence[MetricReading], now: datetime
) -> dict[str, MetricReading]:
    by_name: dict[str, MetricReading] = {}
    for item in readings:
        by_name.setdefault(item.name, item)
    result: dict[str, MetricReading] = {}
    for metric in spec.metrics:
        reading = by_name.get(metric.name)
        if reading is None:
            result[metric.name] = MetricReading.failure(metric.name, now, "not_read", "no reading supplied")
            continue
        age = (now - reading.timestamp).total_seconds()
        if spec.stale_after is not None and age > spec.stale_after:
            reading = MetricReading.failure(metric.name, reading.timestamp, "stale", f"{age:.1f}s old")
        elif reading.outcome == "empty" and metric.on_empty == "zero":
            reading = MetricReading.success(metric.name, reading.timestamp, 0.0)
        result[metric.name] = reading
    return result


def decide(
    spec: AutoscalingSpec,
    bounds: tuple[int, int],
    readings: Sequence[MetricReading],
    current: int,
    ready: int,
    state: PolicyState | None,
    now: datetime,
    replicas: Sequence[ReplicaInfo] | None = None,
) -> Decision:
    """Decide the replica count for one workload at ``now`` (timezone-aware).

    ``bounds`` is the workload's ``(replicas.min, replicas.max)``; ``current`` its desired count as
    the orchestrator reports it, ``ready`` its ready replicas; ``replicas`` optionally the readiness
    of each replica by the ids used in per-replica readings.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if bounds[0] < 0 or bounds[1] < max(bounds[0], 1):
        raise ValueError(f"bad bounds {bounds}: need 0 <= min <= max and max >= 1")
    if current < 0 or ready < 0:
        raise ValueError("current and ready cannot be negative")
    state = state or PolicyState()
    inputs = DecisionInputs(
        bounds=(bounds[0], bounds[1]),
        readings=list(readings),
        current=current,
        ready=ready,
        replicas=list(replicas) if replicas is not None else None,
        now=now,
        config_hash=spec.config_hash(),
    )
    steps: list[Step] = []

    rec_keep, ev_keep = history_horizon(spec.behavior)
    recs = [r for r in state.recommendations if (now - r.at).total_seconds() < rec_keep]
    events = [e for e in state.scale_events if (now - e.at).total_seconds() < ev_keep]
    failures = state.consecutive_failures
    last_active = state.last_active
    inactive_since = state.inactive_since
    panic_until = state.panic_until
    if panic_until is not None and panic_until <= now:
        panic_until = None

    eff_min, eff_max, bounds_note = effective_bounds(spec, inputs.bounds, now)
    steps.append(
        Step(
            name="bounds",
            proposal=None,
            reason="bounds",
            detail=f"[{eff_min}, {eff_max}] {bounds_note}".strip(),
        )
    )

    def finish(desired: int, reason: str, detail: str = "", in_panic: bool = False) -> Decision:
        new_events = list(events)
        if desired != current:
            new_events.append(ScaleEvent(at=now, change=desired - current))
        new_state = PolicyState(
            recommendations=compact_recommendations(recs),
            scale_events=new_events,
            consecutive_failures=failures,
            last_active=last_active,
            inactive_since=inactive_since,
            panic_until=panic_until,
        )
        return Decision(
            desired=desired,
            current=current,
            changed=desired != current,
            reason=reason,
            detail=detail,
            effective_min=eff_min,
            effective_max=eff_max,
            in_panic=in_panic,
            steps=steps,
            inputs=inputs,
            state=new_state,
        )

    if spec.paused:
        steps.append(Step(name="paused", proposal=current, reason="paused"))
        return finish(current, "paused", "autoscaling is paused")

    def bound_reason(value: int, low: bool) -> str:
        """Name the bound that limited ``value``: a schedule's, or the workload's own."""
        if low:
            return "schedule_floor" if eff_min > inputs.bounds[0] and value == max(eff_min, 1) else "clamped_min"
        return "schedule_ceiling" if eff_max < inputs.bounds[1] and value == eff_max else "clamped_max"

    zero_capable = spec.scale_to_zero.enabled and eff_min == 0
    floor = max(eff_min, 1)  # metric scaling never reaches 0; only activation does

    # -- readings and per-metric proposals
    normalised = _normalise_readings(spec, readings, now)
    proposals: list[MetricProposal] = []
    for metric in spec.metrics:
        reading = normalised[metric.name]
        proposal = propose(metric, reading, current, ready, spec.tolerance, replicas)
        proposals.append(proposal)
        detail = proposal.detail if proposal.ok else f"{proposal.error}: {proposal.detail}".rstrip(": ")
        steps.append(
            Step(
                name=f"metric:{metric.name}",
                proposal=proposal.replicas,
                reason=proposal.reason,
                detail=detail,
            )
        )
    n_failed = sum(1 for p in proposals if not p.ok)
    all_failed = n_failed == len(proposals)
    if not all_failed:
        failures = 0
    elif any(p.error != "no_ready_replicas" for p in proposals):
        failures += 1  # only failed reads count towards the fallback, not replicas still starting

    # -- activation (KEDA)
    active = False
    if zero_capable:
        for metric in spec.metrics:
            value = aggregate_value(metric, normalised[metric.name])
            if value is not None and value > metric.activation:
                active = True
        if active:
            last_active = now
            inactive_since = None
        elif n_failed == 0 and inactive_since is None:
            inactive_since = now
    else:
        inactive_since = None

    fb = spec.fallback
    fallback_due = all_failed and failures >= fb.failure_threshold and fb.replicas != "hold"

    def fallback_decision() -> Decision:
        assert fb.replicas != "hold"
        low = 0 if zero_capable else floor
        target = max(low, min(eff_max, int(fb.replicas)))
        steps.append(
            Step(
                name="fallback",
                proposal=target,
                reason="fallback",
                detail=f"{failures} consecutive failed ticks",
            )
        )
        return finish(target, "fallback", f"every metric failed {failures} times in a row")

    if current == 0:
        if zero_capable:
            if active:
                combined = combine(proposals, current)
                want = max(1, combined.replicas or 1)
                limited, _ = limit_rate(want, current, events, spec.behavior, floor, eff_max, now)
                target = max(1, min(limited, eff_max))
                steps.append(
                    Step(
                        name="activation",
                        proposal=target,
                        reason="activation_start",
                        detail="a metric is above its activation threshold",
                    )
                )
                return finish(target, "activation_start", "activated from zero")
            if fallback_due:
                return fallback_decision()
            steps.append(
                Step(
                    name="activation",
                    proposal=0,
                    reason="activation_zero",
                    detail="no metric above its activation threshold",
                )
            )
            return finish(0, "activation_zero", "idle at zero")
        if eff_min == 0:
            steps.append(
                Step(
                    name="zero",
                    proposal=0,
                    reason="zero_hold",
                    detail="at 0 replicas and scale_to_zero is disabled: autoscaling idle",
                )
            )
            return finish(0, "zero_hold", "at zero without scale_to_zero")

    # -- current outside the bounds: straight into them (no metrics, no behavior), as the HPA does
    if current > eff_max:
        reason = bound_reason(eff_max, low=False)
        steps.append(Step(name="bounds_clamp", proposal=eff_max, reason=reason))
        return finish(eff_max, reason, f"current {current} above max {eff_max}")
    if current < floor:
        reason = bound_reason(floor, low=True)
        steps.append(Step(name="bounds_clamp", proposal=floor, reason=reason))
        return finish(floor, reason, f"current {current} below min {floor}")

    # -- every read failed
    if all_failed:
        if fallback_due:
            return fallback_decision()
        steps.append(
            Step(
                name="combine",
                proposal=current,
                reason="missing_metrics_hold",
                detail=f"every metric failed ({failures}/{fb.failure_threshold} ticks)",
            )
        )
        return finish(current, "missing_metrics_hold", "every metric read failed: holding")

    combined = combine(proposals, current)
    assert combined.replicas is not None
    steps.append(Step(name="combine", proposal=combined.replicas, reason=combined.reason, detail=combined.detail))

    # -- scale to zero after the cooldown
    cooling = False
    if zero_capable and not active and n_failed == 0 and inactive_since is not None:
        idle = (now - inactive_since).total_seconds()
        if idle >= spec.scale_to_zero.cooldown:
            steps.append(
                Step(
                    name="activation",
                    proposal=0,
                    reason="activation_zero",
                    detail=f"inactive for {idle:.0f}s >= cooldown {spec.scale_to_zero.cooldown:.0f}s",
                )
            )
            return finish(0, "activation_zero", "inactive past the cooldown")
        cooling = True
        steps.append(
            Step(
                name="activation",
                proposal=None,
                reason="cooldown_hold",
                detail=f"inactive for {idle:.0f}s < cooldown {spec.scale_to_zero.cooldown:.0f}s",
            )
        )

    recs.append(Recommendation(at=now, replicas=combined.replicas))

    # -- burst / panic (Knative)
    burst = spec.burst
    if burst is not None and burst.enabled:
        ratios = [p.usage_ratio for p in proposals if p.usage_ratio is not None]
        peak = max(ratios, default=0.0)
        if peak >= burst.panic_threshold:
            panic_until = now + timedelta(seconds=burst.panic_window)
            steps.append(
                Step(
                    name="panic",
                    proposal=None,
                    reason="panic_enter",
                    detail=f"usage ratio {peak:.3g} >= {burst.panic_threshold:g}",
                )
            )
    if panic_until is not None:
        if combined.replicas > current:
            target = min(combined.replicas, eff_max)
            steps.append(Step(name="panic", proposal=target, reason="panic_scale_up"))
            return finish(target, "panic_scale_up", "burst: scaling up without stabilization", True)
        if combined.replicas < current:
            steps.append(Step(name="panic", proposal=current, reason="panic_hold_down"))
            return finish(current, "panic_hold_down", "burst: no scale-down while in panic", True)
        return finish(current, combined.reason, combined.detail, True)

    # -- behavior
    stabilized, stab_reason = stabilize(combined.replicas, current, recs[:-1], spec.behavior, now)
    if stab_reason:
        steps.append(Step(name="stabilize", proposal=stabilized, reason=stab_reason))
    limited, rate_reason = limit_rate(stabilized, current, events, spec.behavior, floor, eff_max, now)
    if rate_reason in ("clamped_min", "clamped_max"):
        rate_reason = bound_reason(limited, low=rate_reason == "clamped_min")
    if rate_reason:
        steps.append(Step(name="rate", proposal=limited, reason=rate_reason))
    reason = rate_reason or stab_reason or combined.reason
    if (
        limited == current
        and cooling
        and current == floor
        and reason in ("within_tolerance", "direction_flip", "clamped_min", "stabilized_down", "rate_limited_down")
    ):
        reason = "cooldown_hold"
    if limited != current and reason in ("within_tolerance", "direction_flip", "missing_metrics_hold"):
        reason = "scale_up" if limited > current else "scale_down"
    return finish(limited, reason, combined.detail)
