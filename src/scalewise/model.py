"""Runtime state as read from an orchestrator. Pure data: no SDK, no Prefect."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Revision(BaseModel):
    """One entry of a workload's rollout history, newest last.

    ``template`` is the whole rendered spec of that revision (see :mod:`scalewise.revisions`) and
    ``spec_hash`` its hash; both are ``None`` for entries written before revisions kept the spec
    (those record only the image).
    """

    model_config = ConfigDict(frozen=True)

    number: int = Field(ge=1)
    image: str
    created_at: datetime | None = None
    spec_hash: str | None = None
    template: dict[str, Any] | None = None


class WorkloadState(BaseModel):
    """What the orchestrator reports for one workload at one moment.

    ``version`` is an opaque token of the observed object version (Swarm's ``Version.Index``,
    Kubernetes' ``resourceVersion``, a hash of the container set for the plain engine). Every write
    sends it back, and a write whose token is stale raises :class:`~scalewise.errors.ConflictError`.
    """

    model_config = ConfigDict(frozen=True)

    name: str
    target: str
    desired_replicas: int = Field(ge=0)
    ready_replicas: int = Field(default=0, ge=0)
    running_replicas: int = Field(default=0, ge=0)
    updated_replicas: int = Field(default=0, ge=0)
    image: str
    revision: int = Field(default=1, ge=1)
    version: str
    updating: bool = False
    update_state: str | None = Field(default=None, description="Orchestrator's own rollout state, if any")
    message: str | None = None

    def summary(self) -> dict[str, object]:
        return {
            "replicas": self.desired_replicas,
            "ready": self.ready_replicas,
            "image": self.image,
            "revision": self.revision,
        }


class ConvergeResult(BaseModel):
    """Outcome of a bounded wait for a workload to reach its desired state."""

    model_config = ConfigDict(frozen=True)

    converged: bool
    state: WorkloadState
    reason: str = Field(description="Stable code: converged, timeout, rolled_back, update_failed, deadline_exceeded")
    detail: str = ""
    elapsed_s: float = Field(ge=0)


class CanaryState(BaseModel):
    """A workload's canary as the orchestrator reports it: replicas of a new revision beside the stable
    ones (same labels and network alias), marked as canary so they never count as stable replicas."""

    model_config = ConfigDict(frozen=True)

    name: str
    image: str
    weight: int = Field(ge=0, le=100, description="Percent of the stable's desired replicas")
    desired_replicas: int = Field(ge=0)
    ready_replicas: int = Field(default=0, ge=0)
    spec_hash: str | None = Field(default=None, description="Hash of the canary's whole rendered spec")
    template: dict[str, Any] | None = Field(default=None, description="The canary's whole rendered spec")

    def summary(self) -> str:
        return f"canary {self.image} at {self.weight}%: {self.ready_replicas}/{self.desired_replicas} ready"
