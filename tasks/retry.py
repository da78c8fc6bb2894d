"""The one retry policy of every task: transient errors only, exponential backoff with jitter.

A task that waits (``wait_until_ready``, ``apply_image``) has no retry policy at all (:data:`WAITING`):
its wait carries its own deadline and absorbs transient read errors until then; retrying it would
multiply the bound. The steps inside such a task (the plain engine's rolling-update batches, run as task
runs of their own by ``tasks.workload.as_task_run``) are retried with this policy: each is idempotent and
waits against the rollout's one deadline, so a retry never extends it. A timeout
(:class:`ConvergenceTimeout`) is never transient.
"""

from __future__ import annotations

from typing import Any

from prefect.client.schemas.objects import TaskRun
from prefect.states import State
from prefect.tasks import exponential_backoff

from scalewise.errors import ConvergenceTimeout, TransientError

RETRIES = 4
RETRY_DELAYS = exponential_backoff(backoff_factor=0.5)  # 0.5, 1, 2, 4 s
RETRY_JITTER = 0.5


def only_transient(task: Any, task_run: TaskRun, state: State[Any]) -> bool:
    """Retry connection errors, timeouts and 5xx; a 4xx-class refusal fails at once."""
    exc = state.result(raise_on_failure=False)
    if isinstance(exc, ConvergenceTimeout):
        return False
    return isinstance(exc, TransientError | ConnectionError | TimeoutError)


RETRYING: dict[str, Any] = {
    "retries": RETRIES,
    "retry_delay_seconds": RETRY_DELAYS,
    "retry_jitter_factor": RETRY_JITTER,
    "retry_condition_fn": only_transient,
}

WAITING: dict[str, Any] = {"retries": 0}
"""Tasks that wait on a deadline of their own: never retried (the bound stays the bound)."""
