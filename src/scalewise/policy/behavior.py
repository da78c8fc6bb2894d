"""HPA ``behavior``: stabilization windows and rate policies (``horizontal.go`` semantics).

* Stabilization: every raw recommendation is remembered with its time. A scale-up is limited to the
  *minimum* recommendation inside the scale-up window, a scale-down to the *maximum* inside the
  scale-down window (samples strictly after ``now - window``), so short spikes and dips are ignored.
* Rate: each policy allows ``value`` pods (or ``value`` percent) of change relative to the replica
  count at the start of its ``period`` (derived from the scale events in the period);
  ``select_policy`` picks the policy allowing the most change (``max``), the least (``min``), or
  forbids scaling in that direction (``disabled``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from operator import attrgetter

from pydantic import BaseModel, ConfigDict

from scalewise.policy.config import Behavior, ScalingPolicy, ScalingRules


class Recommendation(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    at: datetime
    replicas: int


class ScaleEvent(BaseModel):
    """A scale the policy decided: ``change`` > 0 for up, < 0 for down."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    at: datetime
    change: int


_DELTAS: dict[float, timedelta] = {}


def delta(seconds: float) -> timedelta:
    """``timedelta(seconds=seconds)``, memoised: the windows and periods of a spec recur every tick."""
    found = _DELTAS.get(seconds)
    if found is None:
        if len(_DELTAS) > 4096:  # config values only, but never unbounded
            _DELTAS.clear()
        found = _DELTAS[seconds] = timedelta(seconds=seconds)
    return found


def stabilize(
    desired: int, current: int, history: Sequence[Recommendation], behavior: Behavior, now: datetime
) -> tuple[int, str | None]:
    """Stabilized recommendation and a reason code when it differs from ``desired``."""
    up_cutoff = now - delta(behavior.scale_up.stabilization_window)
    down_cutoff = now - delta(behavior.scale_down.stabilization_window)
    up_rec = desired
    down_rec = desired
    for rec in history:
        at, replicas = rec.at, rec.replicas
        if replicas < up_rec and at > up_cutoff:
            up_rec = replicas
        if replicas > down_rec and at > down_cutoff:
            down_rec = replicas
    result = current
    if result < up_rec:
        result = up_rec
    if result > down_rec:
        result = down_rec
    if result == desired:
        return result, None
    return result, ("stabilized_up" if desired > current else "stabilized_down")


def _period_limit(
    current: int,
    events: Sequence[ScaleEvent],
    rules: ScalingRules,
    now: datetime,
    propose: Callable[[int, ScalingPolicy], int],
    most_change: Callable[[int, int], int],
) -> int:
    """The HPA's rate limit: each policy's proposal from the count at the start of its period
    (``current`` minus the ups plus the downs inside it); ``select_policy`` ``max`` keeps the proposal
    that allows the most change (``most_change``), ``min`` the one that allows the least."""
    if rules.select_policy == "disabled":
        return current
    least_change = max if most_change is min else min
    pick = most_change if rules.select_policy == "max" else least_change
    result: int | None = None
    for policy in rules.policies:
        cutoff = now - delta(policy.period)
        start = current  # minus the ups, plus the downs of the period: both are current - change
        for event in events:
            if event.at > cutoff:
                start -= event.change
        proposed = propose(start, policy)
        result = proposed if result is None else pick(result, proposed)
    return current if result is None else result


def _up(start: int, policy: ScalingPolicy) -> int:
    # percent: rounded up, or a small group could never grow (HPA)
    return start + policy.value if policy.type == "pods" else math.ceil(start * (1 + policy.value / 100))


def _down(start: int, policy: ScalingPolicy) -> int:
    return start - policy.value if policy.type == "pods" else int(start * (1 - policy.value / 100))


def scale_up_limit(current: int, events: Sequence[ScaleEvent], rules: ScalingRules, now: datetime) -> int:
    return _period_limit(current, events, rules, now, _up, max)


def scale_down_limit(current: int, events: Sequence[ScaleEvent], rules: ScalingRules, now: datetime) -> int:
    return _period_limit(current, events, rules, now, _down, min)


def limit_rate(
    desired: int,
    current: int,
    events: Sequence[ScaleEvent],
    behavior: Behavior,
    minimum: int,
    maximum: int,
    now: datetime,
) -> tuple[int, str | None]:
    """Apply the rate policies and the bounds. Reason: rate_limited_up/down, scale_up/down_disabled,
    clamped_max/min (the bound was the tighter limit), or None when ``desired`` passes unchanged."""
    if desired > current:
        if behavior.scale_up.select_policy == "disabled":
            return current, "scale_up_disabled"
        limit = max(scale_up_limit(current, events, behavior.scale_up, now), current)
        if maximum > limit:
            allowed, reason = limit, "rate_limited_up"
        else:
            allowed, reason = maximum, "clamped_max"
        return (allowed, reason) if desired > allowed else (desired, None)
    if desired < current:
        if behavior.scale_down.select_policy == "disabled":
            return current, "scale_down_disabled"
        limit = min(scale_down_limit(current, events, behavior.scale_down, now), current)
        if minimum < limit:
            allowed, reason = limit, "rate_limited_down"
        else:
            allowed, reason = minimum, "clamped_min"
        return (allowed, reason) if desired < allowed else (desired, None)
    return desired, None


def history_horizon(behavior: Behavior) -> tuple[float, float]:
    """Seconds of recommendations and of scale events worth keeping."""
    rec = max(behavior.scale_up.stabilization_window, behavior.scale_down.stabilization_window)
    periods = [p.period for p in (*behavior.scale_up.policies, *behavior.scale_down.policies)]
    return rec, max(periods, default=0.0)


_AT = attrgetter("at")


def compact_recommendations(history: Sequence[Recommendation]) -> list[Recommendation]:
    """Drop samples that can never decide a window again, keeping the result of every future query.

    A stabilization query takes the max (or min) of all samples newer than a cutoff that only
    moves forward. A sample is irrelevant to max-queries once a newer sample is >= it, and to
    min-queries once a newer sample is <= it; a sample irrelevant to both is dropped. This keeps a
    persisted :class:`~scalewise.policy.decide.PolicyState` small (Prefect Variables hold 5,000 chars).
    """
    if len(history) < 2:
        return list(history)
    ordered = sorted(history, key=_AT)
    older = reversed(ordered)
    newest = next(older)
    kept = [newest]
    later_max = later_min = newest.replicas
    for rec in older:
        replicas = rec.replicas
        if replicas > later_max:
            kept.append(rec)
            later_max = replicas
        elif replicas < later_min:
            kept.append(rec)
            later_min = replicas
    kept.reverse()
    return kept
