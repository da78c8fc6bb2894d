"""The one retry policy of every task: transient errors only, exponential backoff with jitter."""

from __future__ import annotations

from typing import Any

from prefect.client.schemas.objects import TaskRun
from prefect.states import State
from prefect.tasks import exponential_backoff

from scalewise.errors import TransientError

RETRIES = 4
RETRY_DELAYS = exponential_backoff(backoff_factor=0.5)  # 0.5, 1, 2, 4 s
RETRY_JITTER = 0.5


def only_transient(task: Any, task_run: TaskRun, state: State[Any]) -> bool:
    """Retry connection errors, timeouts and 5xx; a 4xx-class refusal fails at once."""
    exc = state.result(raise_on_failure=False)
    return isinstance(exc, TransientError | ConnectionError | TimeoutError)


RETRYING: dict[str, Any] = {
    "retries": RETRIES,
    "retry_delay_seconds": RETRY_DELAYS,
    "retry_jitter_factor": RETRY_JITTER,
    "retry_condition_fn": only_transient,
}
