"""The engine adapter's protocol methods: lock, read, check the version, reconcile, then write."""

from __future__ import annotations

import contextlib
import time
from datetime import UTC, datetime

import docker

from scalewise.errors import ConflictError, NotFoundError, PermanentError
from scalewise.model import CanaryState, ConvergeResult, Revision, WorkloadState
from scalewise.orchestrators import docker_common
from scalewise.orchestrators.base import ProgressFn
from scalewise.orchestrators.docker_common import DEFAULT_TIMEOUT_S
from scalewise.orchestrators.engine import canary as canaries
from scalewise.orchestrators.engine.containers import Containers, mapped
from scalewise.orchestrators.engine.labels import Group, Record, template_hash
from scalewise.orchestrators.engine.lock import LOCK_TIMEOUT_S, workload_lock
from scalewise.orchestrators.engine.reconcile import converge_count, reconcile
from scalewise.orchestrators.engine.rollout import rolling_update
from scalewise.policy.readings import ReplicaInfo
from scalewise.revisions import RollbackPlan, restore, spec_revision
from scalewise.spec import WorkloadSpec


class EngineOrchestrator:
    """The :class:`~scalewise.orchestrators.base.Orchestrator` for a plain Docker engine."""

    target = "docker"

    def __init__(self, client: docker.DockerClient) -> None:
        self.client = client
        self.api: docker.APIClient = client.api
        self.containers = Containers(self.api)

    @classmethod
    def from_env(
        cls, timeout_s: float = DEFAULT_TIMEOUT_S, base_url: str | None = None, version: str | None = None
    ) -> EngineOrchestrator:
        """Configured from DOCKER_HOST / DOCKER_TLS_VERIFY / DOCKER_CERT_PATH like the docker CLI, or
        from ``base_url``. ``version=None`` asks the engine for its API version (needs it reachable)."""
        with mapped("connecting to the Docker engine"):
            if base_url is not None:
                client = docker.DockerClient(base_url=base_url, version=version or "auto", timeout=int(timeout_s))
            else:
                client = docker.from_env(timeout=int(timeout_s), version=version or "auto")
        return cls(client)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()

    # ----------------------------------------------------------------------------- reading

    def _rolling_update(self, spec: WorkloadSpec, image: str, reason: str) -> WorkloadState:
        """The rollout engine's rolling update (lock held), then the state it left."""
        rolling_update(self.containers, spec, image, reason)
        return self.read(spec)

    def _state(self, group: Group) -> WorkloadState:
        rec = group.record()
        revisions = {b.revision for b in group.replicas}
        newest = max(revisions) if revisions else rec.revision
        updating = bool(revisions - {rec.revision})
        live = [b for b in group.replicas if b.state not in ("removing", "dead")]
        running = sum(1 for b in live if b.running)
        ready = sum(1 for b in live if b.ready)
        updated = sum(1 for b in live if b.running and b.revision == newest)
        if updating:
            counts = ", ".join(f"r{rev}: {sum(1 for b in live if b.revision == rev)}" for rev in sorted(revisions))
            update_state: str | None = "updating"
            message: str | None = f"containers of several revisions present ({counts})"
        else:
            update_state, message = rec.update_state, rec.message
        return WorkloadState(
            name=group.name,
            target=self.target,
            desired_replicas=rec.desired,
            ready_replicas=ready,
            running_replicas=running,
            updated_replicas=updated,
            image=rec.image,
            revision=rec.revision,
            version=group.version(),
            updating=updating,
            update_state=update_state,
            message=message,
        )

    def read(self, spec: WorkloadSpec) -> WorkloadState:
        return self._state(self.containers.group(spec.name))

    def exists(self, spec: WorkloadSpec) -> bool:
        return not self.containers.group(spec.name).empty

    def revisions(self, spec: WorkloadSpec) -> list[Revision]:
        return list(self.containers.group(spec.name).record().history)

    def replicas(self, spec: WorkloadSpec) -> list[ReplicaInfo]:
        """The replica containers (never the anchors, nor containers being removed), by container name;
        a created but never started container is pending."""
        group = self.containers.group(spec.name)
        if group.empty:
            raise NotFoundError(f"docker workload {spec.name!r}: no containers of it exist")
        live = [b for b in group.replicas if b.state not in ("removing", "dead")]
        return sorted(
            (ReplicaInfo(id=b.name, ready=b.ready, pending=b.state == "created", container_id=b.id) for b in live),
            key=lambda r: r.id,
        )

    def _checked(self, spec: WorkloadSpec, expected_version: str | None) -> Group:
        group = self.containers.group(spec.name)
        if group.empty:
            raise NotFoundError(f"docker workload {spec.name!r}: no containers of it exist")
        version = group.version()
        if expected_version is not None and version != expected_version:
            raise ConflictError(
                f"docker workload {spec.name!r}: observed version {expected_version} is stale"
                f" (now {version}); re-read and decide again"
            )
        return group

    # ----------------------------------------------------------------------------- protocol writes

    def apply(self, spec: WorkloadSpec, replicas: int | None = None) -> WorkloadState:
        if replicas is not None and replicas < 0:
            raise PermanentError(f"docker workload {spec.name!r}: replicas cannot be negative ({replicas})")
        with workload_lock(spec.name, spec.update.timeout + LOCK_TIMEOUT_S):
            group = self.containers.group(spec.name)
            if group.empty:
                self.containers.ensure_image(spec.name, spec.image)
                desired = spec.replicas.start if replicas is None else replicas
                spec_hash = template_hash(spec)
                history = [spec_revision(spec, 1, datetime.now(UTC))]
                self.containers.new_anchor(
                    spec,
                    group,
                    desired=desired,
                    revision=1,
                    image=spec.image,
                    history=history,
                    spec_hash=spec_hash,
                )
                group = self.containers.group(spec.name)
                converge_count(self.containers, spec, group, group.record())
                return self.read(spec)
            reconcile(self.containers, spec)
            group = self.containers.group(spec.name)
            rec = group.record()
            if replicas is not None and replicas != rec.desired:
                self._rescale(spec, group, rec, replicas)  # image and spec hash stay as in rec
            if spec.image != rec.image or template_hash(spec) != rec.spec_hash:
                return self._rolling_update(spec, spec.image, "apply")
            return self.read(spec)

    def set_replicas(self, spec: WorkloadSpec, replicas: int, expected_version: str) -> WorkloadState:
        if replicas < 0:
            raise PermanentError(f"docker workload {spec.name!r}: replicas cannot be negative ({replicas})")
        with workload_lock(spec.name, LOCK_TIMEOUT_S):
            self._checked(spec, expected_version)
            reconcile(self.containers, spec)
            group = self.containers.group(spec.name)
            rec = group.record()
            if replicas != rec.desired:
                self._rescale(spec, group, rec, replicas)
            return self.read(spec)

    def _rescale(self, spec: WorkloadSpec, group: Group, rec: Record, replicas: int) -> None:
        """Record the new desired count (a new anchor), then converge the container count to it."""
        self.containers.rewrite_record(
            spec,
            group,
            rec,
            desired=replicas,
            message=f"scaled to {replicas}",
        )
        group = self.containers.group(spec.name)
        converge_count(self.containers, spec, group, group.record())

    def update_image(self, spec: WorkloadSpec, image: str, expected_version: str) -> WorkloadState:
        try:
            target_spec = spec.with_image(image)
        except ValueError as exc:
            raise PermanentError(f"docker workload {spec.name!r}: bad image {image!r}: {exc}") from None
        with workload_lock(spec.name, LOCK_TIMEOUT_S):
            self._checked(spec, expected_version)
            reconcile(self.containers, spec)
            rec = self.containers.group(spec.name).record()
            if rec.image == image:
                return self.read(spec)
            return self._rolling_update(target_spec, image, "update")

    def apply_rollback(self, spec: WorkloadSpec, plan: RollbackPlan) -> WorkloadState:
        """Roll the containers over to the plan's target revision's whole spec (a new revision)."""
        restored = restore(spec, plan.target)
        with workload_lock(spec.name, restored.update.timeout + LOCK_TIMEOUT_S):
            reconcile(self.containers, restored)
            return self._rolling_update(restored, restored.image, "rollback")

    def remove(self, spec: WorkloadSpec) -> None:
        with workload_lock(spec.name, LOCK_TIMEOUT_S):
            group = self.containers.group(spec.name)
            self.containers.remove_many(
                spec.name, [*group.canaries, *group.replicas], min(spec.stop_grace_period, 10.0)
            )
            self.containers.remove_many(spec.name, group.anchors, grace_s=0)

    # ----------------------------------------------------------------------------- canary

    def read_canary(self, spec: WorkloadSpec) -> CanaryState | None:
        return canaries.read(self.containers.group(spec.name))

    def set_canary(self, spec: WorkloadSpec, canary: WorkloadSpec, weight: int) -> CanaryState:
        if not 0 <= weight <= 100:
            raise PermanentError(f"docker workload {spec.name!r}: weight {weight} is outside [0, 100]")
        with workload_lock(spec.name, canary.update.timeout + LOCK_TIMEOUT_S):
            self._checked(spec, None)
            reconcile(self.containers, spec)
            canaries.set_weight(self.containers, spec, canary, weight)
            state = self.read_canary(spec)
        if state is None:  # removed under us (docker rm): say so rather than report a canary
            raise PermanentError(f"docker workload {spec.name!r}: the canary's containers disappeared")
        return state

    def promote_canary(self, spec: WorkloadSpec) -> WorkloadState:
        with workload_lock(spec.name, spec.update.timeout + LOCK_TIMEOUT_S):
            self._checked(spec, None)
            reconcile(self.containers, spec)
            canaries.promote(self.containers, spec)
            return self.read(spec)

    def abort_canary(self, spec: WorkloadSpec) -> WorkloadState:
        with workload_lock(spec.name, LOCK_TIMEOUT_S):
            self._checked(spec, None)
            canaries.abort(self.containers, spec)
            return self.read(spec)

    # ----------------------------------------------------------------------------- waiting

    def wait_converged(
        self,
        spec: WorkloadSpec,
        timeout_s: float,
        poll_s: float = 0.5,
        on_progress: ProgressFn | None = None,
    ) -> ConvergeResult:
        start = time.monotonic()
        outcome = ""

        def reconcile_unless_busy(lock_wait_s: float) -> None:
            # A held lock means another scalewise operation is changing the workload right now:
            # never touch its containers, just watch. ConflictError also covers an engine 409.
            nonlocal outcome
            with contextlib.suppress(ConflictError), workload_lock(spec.name, lock_wait_s):
                outcome = reconcile(self.containers, spec) or outcome

        def read() -> WorkloadState:
            state = self.read(spec)
            if state.updating:
                # Two revisions while nobody holds the lock: the updater died; resolve it now.
                reconcile_unless_busy(0.0)
                state = self.read(spec)
            return state

        def settled(state: WorkloadState, elapsed: float) -> ConvergeResult | None:
            steady = (
                not state.updating
                and state.desired_replicas == state.ready_replicas == state.updated_replicas
                and state.running_replicas == state.desired_replicas
            )
            if not steady:
                return None
            if outcome == "rolled_back":
                return ConvergeResult(
                    converged=False,
                    state=state,
                    reason="rolled_back",
                    detail=state.message or "an interrupted update was rolled back",
                    elapsed_s=elapsed,
                )
            return ConvergeResult(
                converged=True,
                state=state,
                reason="converged",
                detail=(state.message or "") if outcome else "",
                elapsed_s=elapsed,
            )

        reconcile_unless_busy(min(max(0.0, timeout_s), 1.0))
        return docker_common.poll_converged(
            read,
            settled,
            start=start,
            timeout_s=timeout_s,
            poll_s=poll_s,
            on_progress=on_progress,
            progress=lambda state: (
                f"desired {state.desired_replicas}, ready {state.ready_replicas}, running {state.running_replicas}"
            ),
        )


__all__ = ["EngineOrchestrator"]
