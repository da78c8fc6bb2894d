"""Intent-level tasks over a workload. Each is idempotent (absolute writes carrying the observed
version) and retried for transient errors only, except the tasks that wait (``apply_image``,
``wait_until_ready``): their wait is bounded by its own deadline, so they are never retried."""

from __future__ import annotations

import time

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
from tasks.retry import RETRYING, WAITING


@task(cache_policy=NO_CACHE)
def load_workload(workload: str, image: str | None = None) -> WorkloadSpec:
    """The declared spec of ``workload`` (with an optional image override); SpecError if invalid."""
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
    """Roll out ``image``; on failure roll back, wait for the old revision, then raise RolloutFailed."""
    logger = get_run_logger()
    last = [0.0]

    def progress(state: WorkloadState) -> None:
        if time.monotonic() - last[0] >= 2.0:
            last[0] = time.monotonic()
            logger.info(
                "%s: %d/%d ready, %d updated (%s)", spec.name, state.ready_replicas,
                state.desired_replicas, state.updated_replicas, state.update_state or "-",
            )

    return operations.rolling_update(orchestrators.for_target(spec.target), spec, image, timeout_s, progress)


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
