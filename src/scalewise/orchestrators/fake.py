"""An in-memory orchestrator that honours the whole protocol (:mod:`scalewise.orchestrators.base`).

It runs the contract suite (``tests/test_contract.py``, target ``fake``) and the ``tests/unit`` tier in
seconds, with no engine: workloads live in a dict, time is virtual (``wait_converged`` sleeps by
advancing its own clock), and a rollout is performed inline, like the plain engine adapter does.

Behaviour, as every adapter's:
- every write carries the observed ``version``; a stale one raises :class:`ConflictError` and writes
  nothing; a write that changes nothing keeps the version;
- replica counts are absolute; a negative count or a bad image is a :class:`PermanentError`;
- every write that changes the rendered spec records a revision with
  :func:`~scalewise.revisions.record_revision`; ``apply_rollback`` restores the plan's revision;
- an image in ``broken_images`` never becomes ready: created with it, the workload stays unready (a
  bounded wait times out); updated to it, the rollout fails, the old revision stays and
  :class:`RolloutFailed` names it; as a canary, ``set_canary`` raises CanaryFailed and the unready
  canary stays until aborted.
- a canary is kept beside the workload (never in its counts or version); ``promote_canary`` is a
  rollout to the canary's spec.
  :class:`RolloutFailed` names it;
- ``replicas`` lists one replica per desired count, ids ``<name>-<n>`` (never reused): scaling out adds
  new ids, scaling in drops the newest, a rollout replaces them all; none is pending, all are ready
  unless the image is broken.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime

from scalewise.errors import CanaryFailed, ConflictError, NotFoundError, PermanentError, RolloutFailed
from scalewise.model import CanaryState, ConvergeResult, Revision, WorkloadState
from scalewise.orchestrators.base import ProgressFn
from scalewise.orchestrators.waiting import poll_converged
from scalewise.policy.canary import canary_replicas
from scalewise.policy.readings import ReplicaInfo
from scalewise.revisions import (
    RollbackPlan,
    record_revision,
    render_template,
    restore,
    spec_revision,
    template_hash,
)
from scalewise.spec import WorkloadSpec

#: The test image whose health check always fails (``scripts/build-images.sh``).
BROKEN_IMAGE = "scalewise/busybox:broken"


class VirtualClock:
    """Monotonic seconds that advance only when someone sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.now += max(0.0, seconds)


@dataclass
class _Workload:
    spec: WorkloadSpec  # the spec it runs now (the current revision's, name and target of the caller)
    desired: int
    version: int
    history: list[Revision] = field(default_factory=list)
    revision: int = 1
    update_state: str | None = None
    message: str | None = None
    canary: _Canary | None = None
    replica_ids: list[str] = field(default_factory=list)


@dataclass
class _Canary:
    spec: WorkloadSpec
    weight: int
    desired: int


class FakeOrchestrator:
    """Workloads in memory; ``target`` is reported as each spec's own target."""

    target = "fake"

    def __init__(self, broken_images: frozenset[str] = frozenset({BROKEN_IMAGE})) -> None:
        self.broken_images = broken_images
        self.clock = VirtualClock()
        self._workloads: dict[str, _Workload] = {}
        self._versions = itertools.count(1)
        self._replica_seq = itertools.count(1)
        self._lock = threading.RLock()

    # ----------------------------------------------------------------------------- reads

    def _get(self, spec: WorkloadSpec) -> _Workload:
        found = self._workloads.get(spec.name)
        if found is None:
            raise NotFoundError(f"fake workload {spec.name!r} not found")
        return found

    def _state(self, spec: WorkloadSpec, w: _Workload) -> WorkloadState:
        ready = 0 if w.spec.image in self.broken_images else w.desired
        return WorkloadState(
            name=spec.name,
            target=spec.target,
            desired_replicas=w.desired,
            ready_replicas=ready,
            running_replicas=w.desired,
            updated_replicas=w.desired,
            image=w.spec.image,
            revision=w.revision,
            version=str(w.version),
            update_state=w.update_state,
            message=w.message,
        )

    def read(self, spec: WorkloadSpec) -> WorkloadState:
        with self._lock:
            return self._state(spec, self._get(spec))

    def exists(self, spec: WorkloadSpec) -> bool:
        with self._lock:
            return spec.name in self._workloads

    def revisions(self, spec: WorkloadSpec) -> list[Revision]:
        with self._lock:
            return list(self._get(spec).history)

    def replicas(self, spec: WorkloadSpec) -> list[ReplicaInfo]:
        with self._lock:
            w = self._get(spec)
            ready = w.spec.image not in self.broken_images
            return sorted((ReplicaInfo(id=rid, ready=ready) for rid in w.replica_ids), key=lambda r: r.id)

    def _resize(self, w: _Workload, replicas: int, *, replace: bool = False) -> None:
        """``replicas`` ids: the newest go first on scale-in, new ids on scale-out; ``replace``: all new."""
        if replace:
            w.replica_ids = []
        del w.replica_ids[replicas:]
        while len(w.replica_ids) < replicas:
            w.replica_ids.append(f"{w.spec.name}-{next(self._replica_seq)}")
        w.desired = replicas

    def live_env(self, spec: WorkloadSpec) -> list[dict[str, str]]:
        """The environment each replica runs with (what a test reads around the adapter)."""
        with self._lock:
            w = self._get(spec)
            return [dict(w.spec.env) for _ in range(w.desired)]

    # ----------------------------------------------------------------------------- writes

    def _checked(self, spec: WorkloadSpec, expected_version: str) -> _Workload:
        w = self._get(spec)
        if str(w.version) != expected_version:
            raise ConflictError(f"fake workload {spec.name!r}: version {expected_version} is stale (now {w.version})")
        return w

    def _bump(self, w: _Workload) -> None:
        w.version = next(self._versions)

    @staticmethod
    def _check_count(spec: WorkloadSpec, replicas: int) -> None:
        if replicas < 0:
            raise PermanentError(f"fake workload {spec.name!r}: replicas cannot be negative ({replicas})")

    def _roll_out(self, spec: WorkloadSpec, w: _Workload, new: WorkloadSpec, reason: str) -> WorkloadState:
        """Replace the running spec by ``new`` inline; a broken image is undone and raises RolloutFailed."""
        if new.image in self.broken_images:
            w.update_state = "rollback_completed"
            w.message = f"update to {new.image} failed: never became healthy"
            self._bump(w)
            raise RolloutFailed(spec.name, w.message, rolled_back_to=w.revision)
        w.history, w.revision = record_revision(w.history, new, datetime.now(UTC), at_least=w.revision, force_new=True)
        w.spec = new
        self._resize(w, w.desired, replace=True)
        w.update_state = "completed"
        w.message = f"{reason} to {new.image} completed"
        self._bump(w)
        return self._state(spec, w)

    def apply(self, spec: WorkloadSpec, replicas: int | None = None) -> WorkloadState:
        if replicas is not None:
            self._check_count(spec, replicas)
        with self._lock:
            w = self._workloads.get(spec.name)
            if w is None:
                desired = spec.replicas.start if replicas is None else replicas
                history = [spec_revision(spec, 1, datetime.now(UTC))]
                w = _Workload(spec=spec, desired=desired, version=next(self._versions), history=history)
                self._resize(w, desired)
                self._workloads[spec.name] = w
                return self._state(spec, w)
            if replicas is not None and replicas != w.desired:
                self._resize(w, replicas)
                self._bump(w)
            if render_template(spec) != render_template(w.spec):
                return self._roll_out(spec, w, spec, "apply")
            return self._state(spec, w)

    def set_replicas(self, spec: WorkloadSpec, replicas: int, expected_version: str) -> WorkloadState:
        self._check_count(spec, replicas)
        with self._lock:
            w = self._checked(spec, expected_version)
            if replicas != w.desired:
                self._resize(w, replicas)
                w.message = f"scaled to {replicas}"
                self._bump(w)
            return self._state(spec, w)

    def update_image(self, spec: WorkloadSpec, image: str, expected_version: str) -> WorkloadState:
        try:
            target_spec = spec.with_image(image)
        except ValueError as exc:
            raise PermanentError(f"fake workload {spec.name!r}: bad image {image!r}: {exc}") from None
        with self._lock:
            w = self._checked(spec, expected_version)
            if w.spec.image == image:
                return self._state(spec, w)
            return self._roll_out(spec, w, target_spec, "update")

    def apply_rollback(self, spec: WorkloadSpec, plan: RollbackPlan) -> WorkloadState:
        restored = restore(spec, plan.target)
        with self._lock:
            return self._roll_out(spec, self._get(spec), restored, "rollback")

    def remove(self, spec: WorkloadSpec) -> None:
        with self._lock:
            self._workloads.pop(spec.name, None)

    # ----------------------------------------------------------------------------- canary

    def _canary_state(self, c: _Canary) -> CanaryState:
        template = render_template(c.spec)
        ready = 0 if c.spec.image in self.broken_images else c.desired
        return CanaryState(
            name=c.spec.name, image=c.spec.image, weight=c.weight, desired_replicas=c.desired,
            ready_replicas=ready, spec_hash=template_hash(template), template=template,
        )

    def read_canary(self, spec: WorkloadSpec) -> CanaryState | None:
        with self._lock:
            c = self._get(spec).canary
            return self._canary_state(c) if c is not None else None

    def set_canary(self, spec: WorkloadSpec, canary: WorkloadSpec, weight: int) -> CanaryState:
        with self._lock:
            w = self._get(spec)
            if w.canary is not None and render_template(w.canary.spec) != render_template(canary):
                raise PermanentError(
                    f"fake workload {spec.name!r}: a canary of {w.canary.spec.image} is running;"
                    " promote or abort it first"
                )
            w.canary = _Canary(spec=canary, weight=weight, desired=canary_replicas(weight, w.desired))
            state = self._canary_state(w.canary)
        if state.ready_replicas < state.desired_replicas:
            raise CanaryFailed(spec.name, f"{canary.image}: never became healthy")
        return state

    def promote_canary(self, spec: WorkloadSpec) -> WorkloadState:
        with self._lock:
            w = self._get(spec)
            if w.canary is None:
                raise PermanentError(f"fake workload {spec.name!r}: no canary to promote")
            state = self._roll_out(spec, w, w.canary.spec, "promote")
            w.canary = None
            return state

    def abort_canary(self, spec: WorkloadSpec) -> WorkloadState:
        with self._lock:
            w = self._get(spec)
            w.canary = None
            return self._state(spec, w)

    # ----------------------------------------------------------------------------- waiting

    def wait_converged(
        self,
        spec: WorkloadSpec,
        timeout_s: float,
        poll_s: float = 0.5,
        on_progress: ProgressFn | None = None,
    ) -> ConvergeResult:
        def settled(state: WorkloadState, elapsed: float) -> ConvergeResult | None:
            if state.ready_replicas != state.desired_replicas:
                return None
            return ConvergeResult(converged=True, state=state, reason="converged", elapsed_s=elapsed)

        return poll_converged(
            lambda: self.read(spec),
            settled,
            start=self.clock(),
            timeout_s=timeout_s,
            poll_s=poll_s,
            on_progress=on_progress,
            progress=lambda s: f"desired {s.desired_replicas}, ready {s.ready_replicas}",
            clock=self.clock,
            sleep=self.clock.sleep,
        )

    def close(self) -> None:
        """Nothing to release (the workloads stay until removed)."""


__all__ = ["BROKEN_IMAGE", "FakeOrchestrator", "VirtualClock"]
