"""What each operation does against an orchestrator, without Prefect.

The Prefect tasks in ``tasks/`` are thin wrappers over these functions. Every write is absolute and
carries the observed version; a stale version (ConflictError) makes us re-read and decide again
(bounded), never resend the same write.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from scalewise.errors import ConflictError, PermanentError, RolloutFailed, SpecError
from scalewise.model import ConvergeResult, WorkloadState
from scalewise.orchestrators.base import Orchestrator, ProgressFn
from scalewise.policy.manual import ScaleMode, ScalePlan, plan_scale
from scalewise.revisions import RollbackPlan, plan_rollback, same_spec
from scalewise.spec import WorkloadSpec

log = logging.getLogger(__name__)
MAX_REDECIDE = 5


@dataclass
class WriteOutcome:
    before: WorkloadState
    after: WorkloadState
    changed: bool
    reason_code: str
    conflicts: int = 0
    plan: list[str] = field(default_factory=list)


def check_replicas(spec: WorkloadSpec, replicas: int, field_name: str = "replicas") -> None:
    """An absolute request outside the workload's bounds is refused (it is not silently clamped)."""
    lo, hi = spec.replicas.min, spec.replicas.max
    if not lo <= replicas <= hi:
        raise SpecError("parameter", field_name, f"{replicas} is outside [min={lo}, max={hi}] of {spec.name!r}")


def plan_for(spec: WorkloadSpec, state: WorkloadState, mode: ScaleMode, amount: int) -> ScalePlan:
    if mode == "absolute":
        check_replicas(spec, amount)
    return plan_scale(state.desired_replicas, mode, amount, spec.replicas.min, spec.replicas.max)


def scale(orch: Orchestrator, spec: WorkloadSpec, mode: ScaleMode, amount: int) -> WriteOutcome:
    """Set the replica count; on a stale version re-read and decide again (at most MAX_REDECIDE)."""
    conflicts = 0
    first: WorkloadState | None = None
    while True:
        state = orch.read(spec)
        first = first or state
        plan = plan_for(spec, state, mode, amount)
        steps = [f"replicas {plan.current} -> {plan.target} ({plan.reason_code})"]
        if not plan.changes:
            return WriteOutcome(first, state, False, plan.reason_code, conflicts, steps)
        try:
            after = orch.set_replicas(spec, plan.target, state.version)
            return WriteOutcome(first, after, True, plan.reason_code, conflicts, steps)
        except ConflictError as exc:
            conflicts += 1
            log.warning("stale write to %s (%s); re-reading and deciding again", spec.name, exc)
            if conflicts >= MAX_REDECIDE:
                raise ConflictError(
                    f"{spec.name}: the workload kept changing under us ({conflicts} stale writes); gave up"
                ) from exc


def update_image(orch: Orchestrator, spec: WorkloadSpec, image: str) -> WriteOutcome:
    """Start a rolling update to ``image`` (no-op if already there); re-decide on stale versions."""
    conflicts = 0
    first: WorkloadState | None = None
    while True:
        state = orch.read(spec)
        first = first or state
        if state.image == image and not state.updating:
            return WriteOutcome(first, state, False, "no_change", conflicts, [f"already on {image}"])
        try:
            after = orch.update_image(spec, image, state.version)
            return WriteOutcome(
                first, after, True, "image_update", conflicts, [f"image {state.image} -> {image}"]
            )
        except ConflictError as exc:
            conflicts += 1
            if conflicts >= MAX_REDECIDE:
                raise ConflictError(f"{spec.name}: kept changing during the update; gave up") from exc


def rollback(orch: Orchestrator, spec: WorkloadSpec, plan: RollbackPlan) -> WriteOutcome:
    """Execute ``plan`` (from :func:`~scalewise.revisions.plan_rollback`) exactly; never re-plans.

    Repeatable: when a revision newer than the planned one already renders the plan's target (a
    retried task whose first attempt wrote), nothing is written. When the workload moved on to another revision since
    the plan was made, PermanentError: plan again rather than roll back from somewhere else.
    """
    state = orch.read(spec)
    steps = plan.describe()
    current = next((r for r in orch.revisions(spec) if r.number == state.revision), None)
    if state.revision != plan.from_revision:
        if state.revision > plan.from_revision and current is not None and same_spec(current, plan.target):
            return WriteOutcome(state, state, True, "rollback", 0, steps)
        raise PermanentError(
            f"{spec.name}: now on revision {state.revision}, not {plan.from_revision} as planned;"
            " nothing written, plan the rollback again"
        )
    after = orch.apply_rollback(spec, plan)
    return WriteOutcome(state, after, True, "rollback", 0, steps)


def rolling_update(
    orch: Orchestrator,
    spec: WorkloadSpec,
    image: str,
    timeout_s: float,
    on_progress: ProgressFn | None = None,
) -> tuple[WriteOutcome, ConvergeResult]:
    """Roll out ``image``; if it does not converge in time, roll back and raise RolloutFailed.

    The rollback restores the revision that ran before, waits for it, and only then raises, so the
    workload is never left half-updated.
    """
    outcome = update_image(orch, spec, image)
    if not outcome.changed:
        result = orch.wait_converged(spec, timeout_s, on_progress=on_progress)
        return outcome, result
    result = orch.wait_converged(spec, timeout_s, on_progress=on_progress)
    if result.converged:
        return outcome, result
    before_rev = outcome.before.revision
    current = orch.read(spec)
    if current.revision != before_rev:
        # The target did not revert on its own (Swarm's failure_action and the engine do).
        rollback(orch, spec, plan_rollback(current, orch.revisions(spec), before_rev))
    restored = orch.wait_converged(spec, timeout_s, on_progress=on_progress)
    reason = f"{result.reason}: {result.detail}" if result.detail else result.reason
    if not restored.converged:
        reason += f"; the rollback did not converge either ({restored.reason})"
    raise RolloutFailed(spec.name, reason, rolled_back_to=before_rev)
