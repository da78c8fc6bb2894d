"""Intent-level tasks over a workload. Each is idempotent (absolute writes carrying the observed
version) and retried for transient errors only, except the tasks that wait (``apply_image``,
``wait_until_ready``): their wait is bounded by its own deadline, so they are never retried."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar, cast
from uuid import UUID

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from scalewise import operations, orchestrators
from scalewise.model import ConvergeResult, Revision, WorkloadState
from scalewise.operations import WriteOutcome
from scalewise.policy.manual import ScaleMode
from scalewise.policy.readings import ReplicaInfo
from scalewise.revisions import RollbackPlan
from scalewise.settings import workloads_path
from scalewise.spec import WorkloadSpec, get_workload
from scalewise.steps import steps_run_by
from tasks.retry import RETRYING, WAITING

T = TypeVar("T")


def load_workload(workload: str, image: str | None = None) -> WorkloadSpec:
    """The declared spec of ``workload`` (with an optional image override); SpecError if invalid.

    Not a task: reading a file is no step of the operation (nothing to retry, no state to show; an invalid
    spec fails the run with the SpecError), and a task run costs ~20 ms of every run."""
    spec = get_workload(workloads_path(), workload)
    return spec.with_image(image) if image else spec


@task(cache_policy=NO_CACHE, **RETRYING)
def read_state(spec: WorkloadSpec) -> WorkloadState | None:
    orch = orchestrators.for_target(spec.target)
    return orch.read(spec) if orch.exists(spec) else None


@task(cache_policy=NO_CACHE, **RETRYING)
def read_replicas(spec: WorkloadSpec) -> list[ReplicaInfo]:
    """The workload's live replicas (id, ready, pending) as its orchestrator lists them."""
    return orchestrators.for_target(spec.target).replicas(spec)


@task(cache_policy=NO_CACHE, **RETRYING)
def apply_spec(spec: WorkloadSpec, replicas: int | None = None) -> WorkloadState:
    """Create the workload or bring it in line with its spec (repeatable)."""
    return orchestrators.for_target(spec.target).apply(spec, replicas)


@task(cache_policy=NO_CACHE, **RETRYING)
def apply_scale(spec: WorkloadSpec, mode: ScaleMode, amount: int) -> WriteOutcome:
    """Set an absolute replica count (from a count or a step), re-deciding on stale versions."""
    return operations.scale(orchestrators.for_target(spec.target), spec, mode, amount)


@task(cache_policy=NO_CACHE, **WAITING)
def apply_image(spec: WorkloadSpec, image: str, timeout_s: float) -> tuple[WriteOutcome, ConvergeResult]:
    """Roll out ``image``; on failure roll back, wait for the old revision, then raise RolloutFailed.

    The run shows the rollout's progress as it goes: a log line and a progress artifact (``rollout-NAME``:
    the share of replicas on the new revision, as the orchestrator reports it), updated every 2 s; on
    the plain engine every batch is also a task run of its own (``batch-N-of-M-slots-...``)."""
    logger = get_run_logger()
    last = [0.0]
    bar = RolloutProgress(spec.name, image)

    def progress(state: WorkloadState) -> None:
        if time.monotonic() - last[0] >= 2.0:
            last[0] = time.monotonic()
            logger.info(
                "%s: %d/%d ready, %d updated (%s)", spec.name, state.ready_replicas,
                state.desired_replicas, state.updated_replicas, state.update_state or "-",
            )
            bar.update(state)

    try:
        with steps_run_by(as_task_run):
            outcome, result = operations.rolling_update(
                orchestrators.for_target(spec.target), spec, image, timeout_s, progress
            )
    except Exception as exc:
        bar.finish(None, f"stopped: {type(exc).__name__}")
        raise
    bar.finish(result.state, "done" if outcome.changed else "already on this image")
    return outcome, result


def as_task_run(name: str, fn: Callable[[], T]) -> T:
    """Run one step of an operation (a rolling-update batch on the plain engine) as a task run of its
    own, named after the step, retried for transient errors only (the step is idempotent; its wait keeps
    the rollout's one deadline, so a retry never extends the bound)."""
    step = task(name="rollout-step", task_run_name=name, cache_policy=NO_CACHE, **RETRYING)(fn)
    return step()


class RolloutProgress:
    """The progress artifact of one rollout. Best effort: a failed artifact write is logged, never
    allowed to stop the rollout it describes."""

    def __init__(self, workload: str, image: str) -> None:
        self.workload, self.image = workload, image
        self.artifact: UUID | None = None
        self._last = 0.0
        self._write(0.0, "starting")

    @staticmethod
    def share(state: WorkloadState) -> float:
        """Percent of the desired replicas on the new revision (0-100)."""
        if state.desired_replicas <= 0:
            return 100.0
        return round(100.0 * min(state.updated_replicas, state.desired_replicas) / state.desired_replicas, 1)

    def update(self, state: WorkloadState) -> None:
        self._write(self.share(state), f"{state.updated_replicas}/{state.desired_replicas} updated, "
                                       f"{state.ready_replicas} ready ({state.update_state or '-'})")

    def finish(self, state: WorkloadState | None, how: str) -> None:
        if state is None:
            self._write(None, how)
        else:
            self._write(100.0, f"{how}: {state.ready_replicas}/{state.desired_replicas} ready on {state.image}")

    def _write(self, percent: float | None, what: str) -> None:
        from prefect.artifacts import create_progress_artifact, update_progress_artifact

        description = f"rollout of {self.workload} to {self.image}: {what}"
        try:
            if self.artifact is None:
                self.artifact = cast(UUID, create_progress_artifact(  # sync here: a UUID, not a coroutine
                    percent or 0.0, key=f"rollout-{self.workload}", description=description
                ))
            elif percent is None:  # keep the last share; say why it stopped
                update_progress_artifact(self.artifact, self._last, description=description)
            else:
                update_progress_artifact(self.artifact, percent, description=description)
            if percent is not None:
                self._last = percent
        except Exception as exc:  # the rollout matters more than its progress bar
            get_run_logger().warning("%s: could not write the progress artifact: %s: %s",
                                     self.workload, type(exc).__name__, exc)


@task(cache_policy=NO_CACHE, **RETRYING)
def apply_rollback(spec: WorkloadSpec, plan: RollbackPlan) -> WriteOutcome:
    """Execute exactly ``plan`` (restore its revision's whole spec); repeatable."""
    return operations.rollback(orchestrators.for_target(spec.target), spec, plan)


@task(cache_policy=NO_CACHE, **WAITING)
def wait_until_ready(spec: WorkloadSpec, timeout_s: float) -> ConvergeResult:
    """Bounded wait until desired == ready == updated; returns the outcome (does not raise on timeout)."""
    logger = get_run_logger()
    last = [0.0]

    def progress(state: WorkloadState) -> None:
        if time.monotonic() - last[0] >= 2.0:
            last[0] = time.monotonic()
            logger.info("%s: %d/%d ready", spec.name, state.ready_replicas, state.desired_replicas)

    result = orchestrators.for_target(spec.target).wait_converged(spec, timeout_s, on_progress=progress)
    logger.info("%s: %s after %.1fs", spec.name, result.reason, result.elapsed_s)
    return result


@task(cache_policy=NO_CACHE, **RETRYING)
def list_revisions(spec: WorkloadSpec) -> list[Revision]:
    return orchestrators.for_target(spec.target).revisions(spec)


@task(cache_policy=NO_CACHE, **RETRYING)
def remove_workload(spec: WorkloadSpec) -> None:
    orchestrators.for_target(spec.target).remove(spec)
