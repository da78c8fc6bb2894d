"""The canary strategy's steps and the weight rule (pure: no I/O).

A canary walks its steps in order (Argo Rollouts' ``canary.steps``): ``set_weight: N`` (percent of
the stable's desired replicas run the new revision), ``pause: {duration: 2m}`` (wait) or
``pause: {}`` (wait until a person approves), ``analysis: {...}`` (an :class:`AnalysisSpec`; a
Failed or Error verdict aborts), then the canary is promoted. Without a service mesh the weight is a
replica ratio: :func:`canary_replicas`.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer, model_validator

from scalewise.policy.analysis import AnalysisSpec, Duration

MAX_PAUSE_S = 7 * 86400.0


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Pause(_Strict):
    """``duration`` given: wait that long; empty: wait until a person approves (or rejects)."""

    duration: Duration | None = Field(
        default=None, description="How long to wait, e.g. '2m'; empty: until approved"
    )

    @model_validator(mode="after")
    def _bounds(self) -> Pause:
        if self.duration is not None and not 0 < self.duration <= MAX_PAUSE_S:
            raise ValueError(f"duration: {self.duration:g}s is outside (0, {MAX_PAUSE_S:g}s]")
        return self


class CanaryStep(_Strict):
    """One step: exactly one of ``set_weight``, ``pause``, ``analysis``."""

    set_weight: int | None = Field(default=None, ge=0, le=100, description="Percent of replicas on the canary")
    pause: Pause | None = Field(default=None, description="Wait ({duration: 2m}) or wait for approval ({})")
    analysis: AnalysisSpec | None = Field(default=None, description="Measure; Failed/Error abort the canary")

    @model_validator(mode="before")
    @classmethod
    def _one_key(cls, data: Any) -> Any:
        if isinstance(data, dict):
            given = [k for k in ("set_weight", "pause", "analysis") if data.get(k) is not None]
            if len(given) != 1 and not (set(data) - {"set_weight", "pause", "analysis"}):
                named = ", ".join(given) or "none"
                raise ValueError(
                    f"a step is exactly one of set_weight, pause, analysis (got: {named};"
                    " 'pause: {}' waits for approval)"
                )
        return data

    @model_serializer(mode="wrap")
    def _only_its_key(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        return {k: v for k, v in data.items() if v is not None}

    def describe(self) -> str:
        if self.set_weight is not None:
            return f"set weight {self.set_weight}%"
        if self.pause is not None:
            return f"pause {self.pause.duration:g}s" if self.pause.duration else "pause until approved"
        assert self.analysis is not None
        return "analysis: " + ", ".join(m.name for m in self.analysis.metrics)


def check_steps(steps: list[CanaryStep]) -> list[CanaryStep]:
    """At least one step; weights never go down. ValueError naming the step otherwise."""
    if not steps:
        raise ValueError("steps: a canary needs at least one step")
    last = 0
    for i, step in enumerate(steps):
        if step.set_weight is not None:
            if step.set_weight < last:
                raise ValueError(
                    f"steps[{i}].set_weight: {step.set_weight} is below the previous weight {last}"
                    " (weights never decrease; abort instead)"
                )
            last = step.set_weight
    return steps


def canary_replicas(weight: int, desired: int) -> int:
    """Canary replicas for ``weight`` percent of ``desired`` stable replicas: ceil, at least 1."""
    if not 0 <= weight <= 100:
        raise ValueError(f"weight: {weight} is outside [0, 100]")
    return max(1, -(-weight * max(0, desired) // 100))


def plan_canary(steps: list[CanaryStep], desired: int, stable: str, image: str) -> list[str]:
    """What a canary of ``image`` beside ``desired`` replicas of ``stable`` does, step by step."""
    lines = [f"canary {image} beside {desired} x {stable}"]
    for i, step in enumerate(steps, 1):
        line = f"step {i}: {step.describe()}"
        if step.set_weight is not None:
            line += f" ({canary_replicas(step.set_weight, desired)} canary replicas for {desired} stable)"
        lines.append(line)
    lines.append(f"then: promote (roll the {desired} stable replicas to {image}) and remove the canary")
    lines.append("on an unready canary, a failed analysis or a rejection: abort (remove the canary, stable untouched)")
    return lines


__all__ = ["MAX_PAUSE_S", "CanaryStep", "Pause", "canary_replicas", "check_steps", "plan_canary"]
