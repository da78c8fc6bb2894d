"""PolicyState persisted per workload in a Prefect Variable ``scalewise-policy-<workload>`` (JSON).

A restart (a new served run, a restarted ``scalewise autoscaler``) then keeps the stabilization
history, the failure count and the panic window. Nothing is cached in process: every evaluation
reads the Variable, so several runners share one history.
"""

from __future__ import annotations

from typing import Any

from prefect.variables import Variable

from scalewise.autoscaler import decode_state, encode_state, state_variable
from scalewise.policy.decide import PolicyState

#: Tag on every state Variable (lists them in the Prefect UI).
TAG = "scalewise-policy"


class UnreadableState(ValueError):
    """The Variable exists but does not hold a PolicyState this version can read."""


def load_state(workload: str) -> PolicyState | None:
    """The persisted state, or None when there is none. Plain function (no task run): ``plan`` uses it."""
    value: Any = Variable.get(state_variable(workload), default=None)
    try:
        return decode_state(value)
    except ValueError as exc:
        raise UnreadableState(f"{state_variable(workload)}: {exc}") from exc


def save_state(workload: str, state: PolicyState) -> None:
    Variable.set(state_variable(workload), encode_state(state), tags=[TAG], overwrite=True)


def delete_state(workload: str) -> None:
    Variable.unset(state_variable(workload))
