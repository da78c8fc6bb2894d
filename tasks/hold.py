"""Manual holds (see scalewise.hold) stored in a Prefect Variable per workload."""

from __future__ import annotations

from typing import Any

from prefect.variables import Variable

from scalewise.hold import ManualHold, hold_variable

TAG = "scalewise-policy"


def load_hold(workload: str) -> ManualHold | None:
    """The stored hold (active or expired), or None. An unreadable value counts as none."""
    value: Any = Variable.get(hold_variable(workload), default=None)
    if not isinstance(value, dict):
        return None
    try:
        return ManualHold.model_validate(value)
    except ValueError:
        return None


def save_hold(workload: str, hold: ManualHold) -> None:
    Variable.set(hold_variable(workload), hold.model_dump(mode="json"), tags=[TAG], overwrite=True)


def clear_hold(workload: str) -> None:
    Variable.unset(hold_variable(workload))
