"""Promoting a canary on targets whose stable rolls by itself (Swarm, Kubernetes): the stable's own
rolling update to the canary's spec, undone when it does not converge, as ``operations.rolling_update``
does for a plain rollout. The canary is the caller's to remove (on success) or keep (on failure)."""

from __future__ import annotations

from scalewise.errors import RolloutFailed
from scalewise.orchestrators.base import Orchestrator
from scalewise.revisions import plan_rollback
from scalewise.spec import WorkloadSpec


def roll_stable_to(orch: Orchestrator, spec: WorkloadSpec, target: WorkloadSpec, *, apply: bool = True) -> None:
    """Apply ``target`` to the stable (skipped with ``apply=False``: it already runs it) and wait for
    it (``update.timeout``). If it does not converge, roll the stable back to the revision it ran
    before (unless the target reverted on its own), wait for that, and raise RolloutFailed."""
    before = orch.read(spec)
    if apply:
        orch.apply(target)
    result = orch.wait_converged(target, target.update.timeout)
    if result.converged:
        return
    reason = f"{result.reason}: {result.detail}" if result.detail else result.reason
    current = orch.read(spec)
    if current.revision != before.revision:
        orch.apply_rollback(spec, plan_rollback(current, orch.revisions(spec), before.revision))
        restored = orch.wait_converged(spec, spec.update.timeout)
        if not restored.converged:
            reason += f"; the rollback did not converge either ({restored.reason})"
    raise RolloutFailed(spec.name, f"promoting the canary: {reason}", rolled_back_to=before.revision)


__all__ = ["roll_stable_to"]
