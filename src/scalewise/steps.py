"""Named steps of a long operation, run by whoever started the operation.

An adapter that works in steps (the plain engine's rolling update: one step per batch) calls
:func:`run_step` for each; by default the step just runs. The Prefect layer installs a runner with
:func:`steps_run_by` around the operation so that each step becomes a task run of its own, with its
own retries for transient errors (``tasks/workload.py``). A step must therefore be safe to run again
after a transient failure part-way: it looks at what is there and finishes the rest.

No Prefect here: this module is a leaf of the layering, usable from any adapter.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

T = TypeVar("T")

StepRunner = Callable[[str, Callable[[], Any]], Any]
"""Runs one step: ``runner(name, fn)`` calls ``fn()`` (once, or again on a transient failure) and
returns its result."""

_runner: ContextVar[StepRunner | None] = ContextVar("scalewise_step_runner", default=None)


def run_step(name: str, fn: Callable[[], T]) -> T:
    """Run ``fn`` as the step ``name`` with the installed runner (inline when there is none)."""
    runner = _runner.get()
    if runner is None:
        return fn()
    result: T = runner(name, fn)
    return result


@contextmanager
def steps_run_by(runner: StepRunner) -> Iterator[None]:
    """Run every step started in this context (this thread) through ``runner``."""
    token = _runner.set(runner)
    try:
        yield
    finally:
        _runner.reset(token)


__all__ = ["StepRunner", "run_step", "steps_run_by"]
