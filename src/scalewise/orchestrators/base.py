"""The one small protocol every orchestrator adapter implements (like a KEDA scaler interface).

Rules every adapter follows:
- Writes are absolute (``set_replicas(5)``, never ``+1``) and carry the observed ``version``; a stale
  version raises ConflictError and nothing is written, so a retried task is idempotent.
- Connection errors, timeouts and 5xx raise TransientError; 4xx-class refusals raise PermanentError
  (or a subclass) with a message naming the object and the reason.
- ``apply`` creates or updates the workload to match the spec and is safe to repeat.
- ``update_image`` starts a rolling update and returns; ``wait_converged`` waits for it (bounded).
  An adapter that performs the rollout itself (the plain engine has no rollout controller) may do it
  inline: it then returns the converged state, or restores the old revision and raises RolloutFailed.
- ``apply_rollback`` executes a :class:`~scalewise.revisions.RollbackPlan` computed by
  :func:`~scalewise.revisions.plan_rollback`: it restores the whole recorded spec of the plan's target
  revision (a new revision number, like ``kubectl rollout undo``). It never chooses a target itself.
- Every write that changes the rendered spec records a revision with
  :func:`~scalewise.revisions.record_revision` (the one numbering rule).
- ``replicas`` lists the workload's live replicas (one :class:`~scalewise.policy.readings.ReplicaInfo`
  each, sorted by id): ids unique and stable for a replica's life, named like its per-replica metric
  series; ``ready`` as the adapter's ``ready_replicas`` counts it; ``pending`` for a replica not started
  yet; ``container_id`` on the Docker targets. Replicas being removed are not listed.
  Canary replicas are not listed.

Canary (``update.strategy: canary``; the last four methods): canary replicas run the canary spec (a
new revision's whole spec) beside the stable replicas, with the same labels and network alias, and
are marked as canary: ``read``, ``revisions``, ``set_replicas`` and the version token never count
them. ``set_canary`` sizes them to the weight (:func:`~scalewise.policy.canary.canary_replicas` of
the stable's desired count) and returns once they are ready (bounded by ``update.timeout``; a canary
that never becomes ready raises CanaryFailed and stays for the caller to abort); ``promote_canary``
rolls the stable to the canary spec (the rolling update path) and then removes the canary;
``abort_canary`` removes the canary and touches nothing else. All are safe to repeat. A target
without canaries raises PermanentError naming the target.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from scalewise.model import CanaryState, ConvergeResult, Revision, WorkloadState
from scalewise.policy.readings import ReplicaInfo
from scalewise.revisions import RollbackPlan
from scalewise.spec import WorkloadSpec

ProgressFn = Callable[[WorkloadState], None]


@runtime_checkable
class Orchestrator(Protocol):
    target: str

    def read(self, spec: WorkloadSpec) -> WorkloadState:
        """Current state; NotFoundError if the workload does not exist."""
        ...

    def exists(self, spec: WorkloadSpec) -> bool: ...

    def apply(self, spec: WorkloadSpec, replicas: int | None = None) -> WorkloadState:
        """Create the workload or update it to match ``spec`` (replicas: keep current unless given;
        on create default to ``spec.replicas.start``)."""
        ...

    def set_replicas(self, spec: WorkloadSpec, replicas: int, expected_version: str) -> WorkloadState: ...

    def update_image(self, spec: WorkloadSpec, image: str, expected_version: str) -> WorkloadState: ...

    def apply_rollback(self, spec: WorkloadSpec, plan: RollbackPlan) -> WorkloadState:
        """Restore ``plan.target``'s whole recorded spec (replicas stay); returns the state after the write."""
        ...

    def wait_converged(
        self,
        spec: WorkloadSpec,
        timeout_s: float,
        poll_s: float = 0.5,
        on_progress: ProgressFn | None = None,
    ) -> ConvergeResult: ...

    def revisions(self, spec: WorkloadSpec) -> list[Revision]: ...

    def replicas(self, spec: WorkloadSpec) -> list[ReplicaInfo]:
        """The live replicas, sorted by id (see the module rules); NotFoundError if the workload does not exist."""
        ...

    def remove(self, spec: WorkloadSpec) -> None:
        """Delete the workload and everything it owns; no error if it is already gone."""
        ...

    def close(self) -> None: ...

    # -- canary (issue 9 item 3) ------------------------------------------------------------------

    def read_canary(self, spec: WorkloadSpec) -> CanaryState | None:
        """The workload's canary, ``None`` when it has none."""
        ...

    def set_canary(self, spec: WorkloadSpec, canary: WorkloadSpec, weight: int) -> CanaryState:
        """Run ``canary`` (the new revision's whole spec) on ``weight`` percent of the replicas."""
        ...

    def promote_canary(self, spec: WorkloadSpec) -> WorkloadState:
        """Roll the stable to the canary's spec, then remove the canary; PermanentError without one."""
        ...

    def abort_canary(self, spec: WorkloadSpec) -> WorkloadState:
        """Remove the canary (none: nothing to do); the stable stays as it is."""
        ...
