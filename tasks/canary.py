"""Canary tasks: set the weight, wait, promote, abort (the adapters do the work: ``*_canary`` in
:mod:`scalewise.orchestrators.base`). Setting a weight and promoting wait on their own deadline
(``update.timeout``), so they are never retried; reading and aborting are, for transient errors."""

from __future__ import annotations

import time

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.context import FlowRunContext
from prefect.states import Running

from scalewise import orchestrators
from scalewise.model import CanaryState, WorkloadState
from scalewise.spec import WorkloadSpec
from tasks.retry import RETRYING, WAITING


@task(cache_policy=NO_CACHE, **RETRYING)
def read_canary(spec: WorkloadSpec) -> CanaryState | None:
    return orchestrators.for_target(spec.target).read_canary(spec)


@task(cache_policy=NO_CACHE, task_run_name="set-weight-{weight}", **WAITING)
def set_weight(spec: WorkloadSpec, canary: WorkloadSpec, weight: int) -> CanaryState:
    """Run ``canary`` on ``weight`` percent of the replicas; returns once its replicas are ready."""
    state = orchestrators.for_target(spec.target).set_canary(spec, canary, weight)
    get_run_logger().info("%s: %s", spec.name, state.summary())
    return state


@task(cache_policy=NO_CACHE, task_run_name="pause-{seconds}s", **WAITING)
def pause_for(seconds: float) -> None:
    """A timed pause step: the canary keeps serving while it lasts."""
    time.sleep(seconds)


@task(cache_policy=NO_CACHE, **WAITING)
def promote(spec: WorkloadSpec) -> WorkloadState:
    """Roll the stable to the canary's spec (the rolling update path), then remove the canary."""
    return orchestrators.for_target(spec.target).promote_canary(spec)


@task(cache_policy=NO_CACHE, **RETRYING)
def abort(spec: WorkloadSpec) -> WorkloadState:
    """Remove the canary; the stable is not touched."""
    return orchestrators.for_target(spec.target).abort_canary(spec)


def running_again() -> None:
    """After an approval timed out the run is still Paused, where Prefect refuses task runs: set it
    Running again (forced: the server refuses to resume a pause past its timeout) so the abort and
    its record can run. Nothing to do when the run is not paused."""
    ctx = FlowRunContext.get()
    if ctx is None or ctx.flow_run is None:
        return
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(ctx.flow_run.id)
        if run.state is not None and run.state.is_paused():
            client.set_flow_run_state(ctx.flow_run.id, Running(name="Aborting"), force=True)
