"""``decide()``: one autoscaling decision. Pure and deterministic: no I/O, no clock, no randomness.

``decide()`` is a fold over named steps (:data:`STEPS`); each step records what it did in
``Decision.steps`` with a :class:`Reason` and either ends the decision or passes on:

1. ``bounds``: ``min = max(spec min, active schedule floors)``, ``max = min(spec max, active
   schedule ceilings)`` (a ceiling wins over a conflicting floor).
2. ``paused`` -> keep the current count.
3. ``proposals``: a missing, stale, NaN/Inf, empty (unless ``on_empty: zero``) or errored read is a
   *failed* read. Each metric proposes a count (HPA ``replica_calculator``).
4. ``activation`` (KEDA, only with ``scale_to_zero.enabled`` and an effective min of 0): at 0
   replicas, any metric above its ``activation`` threshold starts the workload; with every metric
   read and none active for ``cooldown``, the workload goes to 0.
5. ``clamp``: a current count outside the effective bounds is moved straight into them (HPA).
6. ``all_failed``: every read failed: hold, or the ``fallback`` count after ``failure_threshold``
   such ticks.
7. ``combine``: largest proposal wins; any failed metric forbids a scale-down.
8. ``cooldown``: scale to zero once inactive for the cooldown.
9. ``burst`` (Knative panic): a usage ratio >= ``panic_threshold`` enters panic for
   ``panic_window``; in panic, scale-up skips stabilization and rate policies and scale-down is
   refused.
10. ``behaviour``: stabilization windows, then rate policies and bounds (HPA ``behavior``).

The returned ``Decision.state`` is the updated :class:`PolicyState` assuming the decided count is
applied; persist it (it is JSON-serialisable) so that restarts keep the stabilization history.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from scalewise.policy.behavior import (
    Recommendation,
    ScaleEvent,
    compact_recommendations,
    delta,
    history_horizon,
    limit_rate,
    stabilize,
)
from scalewise.policy.calculator import Combined, MetricProposal, aggregate_value, combine, propose
from scalewise.policy.config import AutoscalingSpec, MetricTarget
from scalewise.policy.forecast import Forecast, floor_for
from scalewise.policy.readings import MetricReading, ReplicaInfo
from scalewise.policy.trusted import maker


class Reason(StrEnum):
    """Every code ``Decision.reason`` / ``Step.reason`` can carry.

    The values are a contract (events, metrics, automations): pinned by a snapshot test, never renamed.
    """

    PAUSED = "paused"
    WITHIN_TOLERANCE = "within_tolerance"
    DIRECTION_FLIP = "direction_flip"
    SCALE_UP = "scale_up"
    SCALE_DOWN = "scale_down"
    STABILIZED_UP = "stabilized_up"
    STABILIZED_DOWN = "stabilized_down"
    RATE_LIMITED_UP = "rate_limited_up"
    RATE_LIMITED_DOWN = "rate_limited_down"
    SCALE_UP_DISABLED = "scale_up_disabled"
    SCALE_DOWN_DISABLED = "scale_down_disabled"
    CLAMPED_MAX = "clamped_max"
    CLAMPED_MIN = "clamped_min"
    SCHEDULE_FLOOR = "schedule_floor"
    SCHEDULE_CEILING = "schedule_ceiling"
    MISSING_METRICS_HOLD = "missing_metrics_hold"
    FALLBACK = "fallback"
    ACTIVATION_START = "activation_start"
    ACTIVATION_ZERO = "activation_zero"
    COOLDOWN_HOLD = "cooldown_hold"
    ZERO_HOLD = "zero_hold"
    PANIC_SCALE_UP = "panic_scale_up"
    PANIC_HOLD_DOWN = "panic_hold_down"
    # step-only codes
    BOUNDS = "bounds"
    FAILED = "failed"
    PANIC_ENTER = "panic_enter"
    # predictive scaling
    FORECAST_FLOOR = "forecast_floor"  # the forecast floor raised the reactive proposal
    FORECAST_COVERED = "forecast_covered"  # step: the reactive proposal already covers the floor
    FORECAST_ONLY = "forecast_only"  # step: mode forecast_only, the floor is recorded, not acted on
    FORECAST_UNAVAILABLE = "forecast_unavailable"  # step: no forecast (no history, no model...)
    FORECAST_STALE = "forecast_stale"  # step: the forecast's model is older than max_model_age


#: Every code ``Decision.reason`` / ``Step.reason`` can carry (the values of :class:`Reason`).
REASONS: tuple[str, ...] = tuple(r.value for r in Reason)


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
    forecast: Forecast | None = None


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


# The records decide() builds from values it computed itself: unvalidated (see policy.trusted).
_make_step = maker(Step)
_make_recommendation = maker(Recommendation)
_make_event = maker(ScaleEvent)
_make_state = maker(PolicyState)
_make_inputs = maker(DecisionInputs)
_make_decision = maker(Decision)


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
    metrics = spec.metrics
    if len(readings) == 1 and len(metrics) == 1 and spec.stale_after is None:  # the common case, same result
        only, first = readings[0], metrics[0]
        if only.name == first.name and (only.outcome != "empty" or first.on_empty != "zero"):
            return {first.name: only}
    by_name: dict[str, MetricReading] = {}
    for item in readings:
        by_name.setdefault(item.name, item)
    result: dict[str, MetricReading] = {}
    stale_after = spec.stale_after
    for metric in spec.metrics:
        reading = by_name.get(metric.name)
        if reading is None:
            result[metric.name] = MetricReading.failure(metric.name, now, "not_read", "no reading supplied")
            continue
        age = (now - reading.timestamp).total_seconds() if stale_after is not None else 0.0
        if stale_after is not None and age > stale_after:
            reading = MetricReading.failure(metric.name, reading.timestamp, "stale", f"{age:.1f}s old")
        elif reading.outcome == "empty" and metric.on_empty == "zero":
            reading = MetricReading.success(metric.name, reading.timestamp, 0.0)
        result[metric.name] = reading
    return result


# -- the tick: what the steps share -----------------------------------------------------------------


@dataclass(slots=True)
class _Tick:
    """One decision in progress: the inputs, the state being updated and the steps recorded so far."""

    spec: AutoscalingSpec
    plan: _Plan
    inputs: DecisionInputs
    readings: Sequence[MetricReading]
    recs: list[Recommendation]
    events: list[ScaleEvent]
    failures: int
    last_active: datetime | None
    inactive_since: datetime | None
    panic_until: datetime | None
    now: datetime
    current: int
    steps: list[Step] = field(default_factory=list)
    eff_min: int = 0
    eff_max: int = 0
    floor: int = 1  # max(eff_min, 1): metric scaling never reaches 0; only activation does (set by _bounds)
    zero_capable: bool = False  # scale_to_zero enabled and an effective min of 0 (set by _bounds)
    proposals: list[MetricProposal] = field(default_factory=list)
    normalised: dict[str, MetricReading] = field(default_factory=dict)
    n_failed: int = 0
    active: bool = False
    cooling: bool = False
    combined: Combined | None = None
    target: int = 0  # combined.replicas (set with combined, from the ``combine`` step on)
    remembered: bool = False

    @property
    def all_failed(self) -> bool:
        return self.n_failed == len(self.proposals)

    @property
    def fallback_due(self) -> bool:
        fb = self.spec.fallback
        return self.all_failed and self.failures >= fb.failure_threshold and fb.replicas != "hold"

    def step(self, name: str, proposal: int | None, reason: str, detail: str = "") -> None:
        self.steps.append(_make_step(name=name, proposal=proposal, reason=reason, detail=detail))

    def bound_reason(self, value: int, low: bool) -> Reason:
        """Name the bound that limited ``value``: a schedule's, or the workload's own."""
        lo, hi = self.inputs.bounds
        if low:
            return Reason.SCHEDULE_FLOOR if self.eff_min > lo and value == self.floor else Reason.CLAMPED_MIN
        return Reason.SCHEDULE_CEILING if self.eff_max < hi and value == self.eff_max else Reason.CLAMPED_MAX

    def finish(self, desired: int, reason: str, detail: str = "", in_panic: bool = False) -> Decision:
        current, now = self.current, self.now
        new_events = self.events  # this tick's own list (made by _start), not the state's
        if desired != current:
            new_events.append(_make_event(at=now, change=desired - current))
        new_state = _make_state(
            recommendations=compact_recommendations(self.recs),
            scale_events=new_events,
            consecutive_failures=self.failures,
            last_active=self.last_active,
            inactive_since=self.inactive_since,
            panic_until=self.panic_until,
        )
        return _make_decision(
            desired=desired,
            current=current,
            changed=desired != current,
            reason=reason,
            detail=detail,
            effective_min=self.eff_min,
            effective_max=self.eff_max,
            in_panic=in_panic,
            steps=self.steps,
            inputs=self.inputs,
            state=new_state,
        )


Outcome = Decision | None
StepFn = Callable[[_Tick], Outcome]


# -- the steps, in order ------------------------------------------------------------------------------


def _bounds(t: _Tick) -> Outcome:
    if t.plan.schedules:
        t.eff_min, t.eff_max, note = effective_bounds(t.spec, t.inputs.bounds, t.now)
        t.step("bounds", None, Reason.BOUNDS, f"[{t.eff_min}, {t.eff_max}] {note}".strip())
    else:  # effective_bounds without schedules: the same step for the same bounds on every tick
        t.eff_min, t.eff_max = bounds = t.inputs.bounds
        step = _BOUND_STEPS.get(bounds)
        if step is None:
            if len(_BOUND_STEPS) > 4096:  # config values only, but never unbounded
                _BOUND_STEPS.clear()
            step = _BOUND_STEPS[bounds] = _make_step(
                name="bounds", proposal=None, reason=Reason.BOUNDS, detail=f"[{t.eff_min}, {t.eff_max}]"
            )
        t.steps.append(step)  # records are frozen: one instance can serve every decision
    t.floor = max(t.eff_min, 1)
    t.zero_capable = t.plan.zero_enabled and t.eff_min == 0
    return None


#: The ``bounds`` step by (min, max), for specs without schedules.
_BOUND_STEPS: dict[tuple[int, int], Step] = {}


def _paused(t: _Tick) -> Outcome:
    if not t.spec.paused:
        return None
    t.step("paused", t.current, Reason.PAUSED)
    return t.finish(t.current, Reason.PAUSED, "autoscaling is paused")


def _proposals(t: _Tick) -> Outcome:
    t.normalised = normalised = _normalise_readings(t.spec, t.readings, t.now)
    inputs, tolerances, failed = t.inputs, t.plan.tolerances, 0
    proposals, steps = t.proposals, t.steps
    for metric, step_name in t.plan.metrics:
        proposal = propose(metric, normalised[metric.name], t.current, inputs.ready, tolerances, inputs.replicas)
        proposals.append(proposal)
        if proposal.ok:
            detail = proposal.detail
        else:
            failed += 1
            detail = f"{proposal.error}: {proposal.detail}".rstrip(": ")
        steps.append(_make_step(name=step_name, proposal=proposal.replicas, reason=proposal.reason, detail=detail))
    t.n_failed = failed
    if failed != len(proposals):  # not t.all_failed
        t.failures = 0
    elif any(p.error != "no_ready_replicas" for p in proposals):
        t.failures += 1  # only failed reads count towards the fallback, not replicas still starting
    return None


def _activity(t: _Tick) -> Outcome:
    """KEDA: is any metric above its activation threshold? Tracks ``last_active``/``inactive_since``."""
    if not t.zero_capable:
        t.inactive_since = None
        return None
    for metric in t.spec.metrics:
        value = aggregate_value(metric, t.normalised[metric.name])
        if value is not None and value > metric.activation:
            t.active = True
    if t.active:
        t.last_active = t.now
        t.inactive_since = None
    elif t.n_failed == 0 and t.inactive_since is None:
        t.inactive_since = t.now
    return None


def _fallback(t: _Tick) -> Decision:
    replicas = t.spec.fallback.replicas
    assert replicas != "hold"
    low = 0 if t.zero_capable else t.floor
    target = max(low, min(t.eff_max, int(replicas)))
    t.step("fallback", target, Reason.FALLBACK, f"{t.failures} consecutive failed ticks")
    return t.finish(target, Reason.FALLBACK, f"every metric failed {t.failures} times in a row")


def _at_zero(t: _Tick) -> Outcome:
    """At 0 replicas: activation starts the workload, else it stays at zero (or falls back)."""
    if t.current != 0:
        return None
    if t.zero_capable:
        if t.active:
            combined = combine(t.proposals, t.current)
            want = max(1, combined.replicas or 1)
            limited, _ = limit_rate(want, t.current, t.events, t.spec.behavior, t.floor, t.eff_max, t.now)
            target = max(1, min(limited, t.eff_max))
            t.step("activation", target, Reason.ACTIVATION_START, "a metric is above its activation threshold")
            return t.finish(target, Reason.ACTIVATION_START, "activated from zero")
        if t.fallback_due:
            return _fallback(t)
        t.step("activation", 0, Reason.ACTIVATION_ZERO, "no metric above its activation threshold")
        return t.finish(0, Reason.ACTIVATION_ZERO, "idle at zero")
    if t.eff_min == 0:
        t.step("zero", 0, Reason.ZERO_HOLD, "at 0 replicas and scale_to_zero is disabled: autoscaling idle")
        return t.finish(0, Reason.ZERO_HOLD, "at zero without scale_to_zero")
    return None


def _clamp(t: _Tick) -> Outcome:
    """A current count outside the bounds goes straight into them (no metrics, no behavior), as the HPA does."""
    if t.current > t.eff_max:
        reason = t.bound_reason(t.eff_max, low=False)
        t.step("bounds_clamp", t.eff_max, reason)
        return t.finish(t.eff_max, reason, f"current {t.current} above max {t.eff_max}")
    if t.current < t.floor:
        reason = t.bound_reason(t.floor, low=True)
        t.step("bounds_clamp", t.floor, reason)
        return t.finish(t.floor, reason, f"current {t.current} below min {t.floor}")
    return None


def _all_failed(t: _Tick) -> Outcome:
    if not t.all_failed:
        return None
    if t.fallback_due:
        return _fallback(t)
    threshold = t.spec.fallback.failure_threshold
    detail = f"every metric failed ({t.failures}/{threshold} ticks)"
    t.step("combine", t.current, Reason.MISSING_METRICS_HOLD, detail)
    return t.finish(t.current, Reason.MISSING_METRICS_HOLD, "every metric read failed: holding")


def _combine(t: _Tick) -> Outcome:
    t.combined = combined = combine(t.proposals, t.current)
    assert combined.replicas is not None  # _all_failed ended the decision otherwise
    t.target = target = combined.replicas
    t.steps.append(_make_step(name="combine", proposal=target, reason=combined.reason, detail=combined.detail))
    return None


def _cooldown(t: _Tick) -> Outcome:
    """Scale to zero once every metric has been read and inactive for the cooldown."""
    if not (t.zero_capable and not t.active and t.n_failed == 0 and t.inactive_since is not None):
        return None
    idle = (t.now - t.inactive_since).total_seconds()
    cooldown = t.spec.scale_to_zero.cooldown
    if idle >= cooldown:
        t.step("activation", 0, Reason.ACTIVATION_ZERO, f"inactive for {idle:.0f}s >= cooldown {cooldown:.0f}s")
        return t.finish(0, Reason.ACTIVATION_ZERO, "inactive past the cooldown")
    t.cooling = True
    t.step("activation", None, Reason.COOLDOWN_HOLD, f"inactive for {idle:.0f}s < cooldown {cooldown:.0f}s")
    return None


def _forecast_floor(t: _Tick) -> Outcome:
    """Predictive scaling: the forecast's floor raises the reactive proposal (never lowers it)."""
    predictive = t.spec.predictive
    if predictive is None:
        return None
    forecast = t.inputs.forecast
    if forecast is None or forecast.value is None:
        why = "no forecast supplied" if forecast is None else f"{forecast.unavailable}: {forecast.detail}"
        t.step("forecast", None, Reason.FORECAST_UNAVAILABLE, why.rstrip(": "))
        return None
    if forecast.trained_at is not None:
        age = (t.now - forecast.trained_at).total_seconds()
        if age > predictive.max_model_age:
            detail = f"model trained {age:.0f}s ago > max_model_age {predictive.max_model_age:.0f}s"
            t.step("forecast", None, Reason.FORECAST_STALE, detail)
            return None
    plan = t.plan
    floor = floor_for(forecast.value, predictive.margin, plan.predictive_target)
    horizon = _SECONDS.get(forecast.horizon)
    if horizon is None:
        if len(_SECONDS) > 4096:  # horizons are config values, but never unbounded
            _SECONDS.clear()
        horizon = _SECONDS[forecast.horizon] = f"{forecast.horizon:g}s"
    detail = f"{forecast.forecaster} forecast {forecast.value:.6g} over {horizon}{plan.floor_formula}{floor}"
    if forecast.detail:
        detail = f"{detail} ({forecast.detail})"
    if predictive.mode == "forecast_only":
        t.step("forecast", floor, Reason.FORECAST_ONLY, detail + f"; would raise {t.target} to {floor}"
               if floor > t.target else detail + "; would not change the proposal")
        return None
    if floor <= t.target:
        t.step("forecast", floor, Reason.FORECAST_COVERED, detail)
        return None
    t.step("forecast", floor, Reason.FORECAST_FLOOR, detail)
    t.combined, t.target = Combined(floor, Reason.FORECAST_FLOOR, predictive.metric, detail), floor
    return None


def _remember(t: _Tick) -> Outcome:
    """Record this tick's recommendation for the stabilization windows.

    Not when a failed metric forbade the scale-down: the HPA records nothing on such a tick (its
    reconcile errors out), and a recorded hold would block a later scale-down for a whole window.
    """
    assert t.combined is not None
    if t.combined.reason != Reason.MISSING_METRICS_HOLD:
        t.recs.append(_make_recommendation(at=t.now, replicas=t.target))
        t.remembered = True
    return None


def _burst(t: _Tick) -> Outcome:
    """Knative panic: enter on a burst; while in panic scale up at once and never down."""
    burst = t.spec.burst
    if burst is not None and burst.enabled:
        peak = max((p.usage_ratio for p in t.proposals if p.usage_ratio is not None), default=0.0)
        if peak >= burst.panic_threshold:
            t.panic_until = t.now + delta(burst.panic_window)
            t.step("panic", None, Reason.PANIC_ENTER, f"usage ratio {peak:.3g} >= {burst.panic_threshold:g}")
    if t.panic_until is None:
        return None
    assert t.combined is not None
    if t.target > t.current:
        target = min(t.target, t.eff_max)
        t.step("panic", target, Reason.PANIC_SCALE_UP)
        return t.finish(target, Reason.PANIC_SCALE_UP, "burst: scaling up without stabilization", True)
    if t.target < t.current:
        t.step("panic", t.current, Reason.PANIC_HOLD_DOWN)
        return t.finish(t.current, Reason.PANIC_HOLD_DOWN, "burst: no scale-down while in panic", True)
    return t.finish(t.current, t.combined.reason, t.combined.detail, True)


#: ``f"{seconds:g}s"`` by seconds (the forecast's horizon: the same few values every tick).
_SECONDS: dict[float, str] = {}


_HOLD_AT_FLOOR = (
    Reason.WITHIN_TOLERANCE,
    Reason.DIRECTION_FLIP,
    Reason.CLAMPED_MIN,
    Reason.STABILIZED_DOWN,
    Reason.RATE_LIMITED_DOWN,
)
_NO_CHANGE = (Reason.WITHIN_TOLERANCE, Reason.DIRECTION_FLIP, Reason.MISSING_METRICS_HOLD)


def _behaviour(t: _Tick) -> Outcome:
    """HPA behavior: stabilization windows, then rate policies and bounds."""
    assert t.combined is not None
    current, behavior = t.current, t.spec.behavior
    history = t.recs[:-1] if t.remembered else t.recs
    stabilized, stab_reason = stabilize(t.target, current, history, behavior, t.now)
    if stab_reason:
        t.step("stabilize", stabilized, stab_reason)
    limited, rate_reason = limit_rate(stabilized, current, t.events, behavior, t.floor, t.eff_max, t.now)
    if rate_reason in (Reason.CLAMPED_MIN, Reason.CLAMPED_MAX):
        rate_reason = t.bound_reason(limited, low=rate_reason == Reason.CLAMPED_MIN)
    if rate_reason:
        t.step("rate", limited, rate_reason)
    reason = rate_reason or stab_reason or t.combined.reason
    if limited == current and t.cooling and current == t.floor and reason in _HOLD_AT_FLOOR:
        reason = Reason.COOLDOWN_HOLD
    if limited != current and reason in _NO_CHANGE:
        reason = Reason.SCALE_UP if limited > current else Reason.SCALE_DOWN
    return t.finish(limited, reason, t.combined.detail)


#: The steps of :func:`decide`, in order; the first one that returns a Decision ends the fold.
STEPS: tuple[StepFn, ...] = (
    _bounds,
    _paused,
    _proposals,
    _activity,
    _at_zero,
    _clamp,
    _all_failed,
    _combine,
    _cooldown,
    _forecast_floor,
    _remember,
    _burst,
    _behaviour,
)


@dataclass(frozen=True, slots=True)
class _Plan:
    """What :func:`decide` derives from a spec, once per spec object (specs are frozen)."""

    steps: tuple[StepFn, ...]  # STEPS without those that can never act for this spec
    metrics: tuple[tuple[MetricTarget, str], ...]  # each metric and the name of its step
    tolerances: tuple[float, float]
    keep_recommendations: timedelta  # history_horizon(spec.behavior)
    keep_events: timedelta
    schedules: bool
    zero_enabled: bool
    predictive_target: float  # spec.predictive_target() (0.0 without predictive)
    floor_formula: str  # the forecast step's detail between the horizon and the floor ("" without predictive)
    config_hash: str  # spec.config_hash() (a frozen spec keeps it)


def _compile(spec: AutoscalingSpec) -> _Plan:
    idle: set[StepFn] = set()  # each would return None at once and change nothing, on every tick
    if not spec.paused:
        idle.add(_paused)
    if not spec.scale_to_zero.enabled:
        idle.add(_cooldown)
    if spec.predictive is None:
        idle.add(_forecast_floor)
    rec_keep, ev_keep = history_horizon(spec.behavior)
    target = spec.predictive_target() if spec.predictive is not None else 0.0
    formula = f" x (1 + {spec.predictive.margin:g}) / {target:g} -> floor " if spec.predictive is not None else ""
    return _Plan(
        steps=tuple(step for step in STEPS if step not in idle),
        metrics=tuple((metric, f"metric:{metric.name}") for metric in spec.metrics),
        tolerances=spec.tolerances(),
        keep_recommendations=delta(rec_keep),
        keep_events=delta(ev_keep),
        schedules=bool(spec.schedules),
        zero_enabled=spec.scale_to_zero.enabled,
        predictive_target=target,
        floor_formula=formula,
        config_hash=spec.config_hash(),
    )


_PLANS: dict[int, tuple[weakref.ref[AutoscalingSpec], _Plan]] = {}


def _plan(spec: AutoscalingSpec) -> _Plan:
    """The spec's plan, kept while the spec object lives."""
    key = id(spec)
    found = _PLANS.get(key)
    if found is not None and found[0]() is spec:
        return found[1]
    plan = _compile(spec)
    _PLANS[key] = (weakref.ref(spec, lambda _, key=key: _PLANS.pop(key, None)), plan)  # type: ignore[misc]
    return plan


def _start(
    spec: AutoscalingSpec,
    bounds: tuple[int, int],
    readings: Sequence[MetricReading],
    current: int,
    ready: int,
    state: PolicyState,
    now: datetime,
    replicas: Sequence[ReplicaInfo] | None,
    forecast: Forecast | None,
) -> _Tick:
    plan = _plan(spec)
    inputs = _make_inputs(
        bounds=(bounds[0], bounds[1]),
        readings=list(readings),
        current=current,
        ready=ready,
        replicas=list(replicas) if replicas is not None else None,
        now=now,
        config_hash=plan.config_hash,
        forecast=forecast,
    )
    rec_cut, ev_cut = now - plan.keep_recommendations, now - plan.keep_events
    panic_until = state.panic_until
    if panic_until is not None and panic_until <= now:
        panic_until = None
    return _Tick(  # positional, in the field order (a hot path): spec, plan, inputs, readings, recs, events,
        # failures, last_active, inactive_since, panic_until, now, current
        spec,
        plan,
        inputs,
        readings,
        [r for r in state.recommendations if r.at > rec_cut],
        [e for e in state.scale_events if e.at > ev_cut],
        state.consecutive_failures,
        state.last_active,
        state.inactive_since,
        panic_until,
        now,
        current,
    )


def seed_state(spec: AutoscalingSpec, current: int, now: datetime) -> PolicyState:
    """The state of a workload seen for the first time (``decide(state=None)``).

    More careful than the HPA (whose controller forgets its history on restart): the current count
    is recorded as a recommendation made now, so nothing scales in before a full scale-down
    stabilization window has been observed. (With a scale-up window > 0 it delays scale-up too.)
    """
    if spec.behavior.scale_down.stabilization_window <= 0 or current <= 0:
        return PolicyState()
    return PolicyState(recommendations=[Recommendation(at=now, replicas=current)])


def decide(
    spec: AutoscalingSpec,
    bounds: tuple[int, int],
    readings: Sequence[MetricReading],
    current: int,
    ready: int,
    state: PolicyState | None,
    now: datetime,
    replicas: Sequence[ReplicaInfo] | None = None,
    forecast: Forecast | None = None,
) -> Decision:
    """Decide the replica count for one workload at ``now`` (timezone-aware).

    ``bounds`` is the workload's ``(replicas.min, replicas.max)``; ``current`` its desired count as
    the orchestrator reports it, ``ready`` its ready replicas; ``replicas`` optionally the readiness
    of each replica by the ids used in per-replica readings. ``state=None`` means a workload seen
    for the first time: its history is seeded (:func:`seed_state`); pass ``PolicyState()`` for none.
    ``forecast`` is the demand forecast for ``spec.predictive`` (made outside, see
    :mod:`scalewise.policy.forecast`); it is recorded in ``Decision.inputs`` and replayed.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if bounds[0] < 0 or bounds[1] < max(bounds[0], 1):
        raise ValueError(f"bad bounds {bounds}: need 0 <= min <= max and max >= 1")
    if current < 0 or ready < 0:
        raise ValueError("current and ready cannot be negative")
    if state is None:
        state = seed_state(spec, current, now)
    tick = _start(spec, bounds, readings, current, ready, state, now, replicas, forecast)
    for step in tick.plan.steps:
        decision = step(tick)
        if decision is not None:
            return decision
    raise AssertionError("the last step always decides")  # pragma: no cover
