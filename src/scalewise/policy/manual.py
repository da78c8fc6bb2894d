"""Planning for operator-requested scaling (scale to N, out/in by a step). Pure."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ScaleMode = Literal["absolute", "out", "in"]


@dataclass(frozen=True)
class ScalePlan:
    current: int
    requested: int
    target: int
    reason_code: str  # scale_up, scale_down, no_change, clamped_min, clamped_max

    @property
    def changes(self) -> bool:
        return self.target != self.current


def plan_scale(current: int, mode: ScaleMode, amount: int, minimum: int, maximum: int) -> ScalePlan:
    """Absolute target for a manual request, clamped to [minimum, maximum].

    ``amount`` is the replica count for ``absolute`` and the step for ``out``/``in``.
    """
    if amount < 0:
        raise ValueError("amount cannot be negative")
    if mode == "absolute":
        requested = amount
    elif mode == "out":
        requested = current + amount
    elif mode == "in":
        requested = current - amount
    else:  # pragma: no cover - Literal guards this
        raise ValueError(f"unknown mode {mode!r}")
    target = max(minimum, min(maximum, requested))
    if target != requested:
        code = "clamped_max" if requested > maximum else "clamped_min"
    elif target > current:
        code = "scale_up"
    elif target < current:
        code = "scale_down"
    else:
        code = "no_change"
    return ScalePlan(current=current, requested=requested, target=target, reason_code=code)
