"""The engine adapter's label schema: what each container's labels say, read back as a group.

Pure (no SDK): :class:`Box` is one listed container, :class:`Group` a workload's containers (anchors
and replicas), :class:`Record` the committed state read from the newest anchor (or recovered from
replica labels). The table of labels is in :mod:`scalewise.orchestrators.engine`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from scalewise.errors import NotFoundError
from scalewise.model import Revision
from scalewise.orchestrators.docker_common import (
    LABEL_CANARY_HASH,
    LABEL_CANARY_TEMPLATE,
    LABEL_CANARY_WEIGHT,
    LABEL_MANAGED,
    LABEL_REVISION,
    LABEL_REVISIONS,
    LABEL_ROLE,
    LABEL_SPEC_HASH,
    LABEL_WORKLOAD,
    ROLE_ANCHOR,
    ROLE_CANARY,
    ROLE_REPLICA,
)
from scalewise.orchestrators.history import parse_history
from scalewise.spec import WorkloadSpec

LABEL_IMAGE = "scalewise.image"
LABEL_SLOT = "scalewise.slot"
LABEL_DESIRED = "scalewise.desired"
LABEL_HEALTHCHECK = "scalewise.healthcheck"
LABEL_ANCHOR_SEQ = "scalewise.anchor-seq"
LABEL_UPDATE_STATE = "scalewise.update-state"
LABEL_UPDATE_MESSAGE = "scalewise.update-message"
SWARM_TASK_LABEL = "com.docker.swarm.task.id"


def _int(value: str | None, default: int = 0) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


def template_hash(spec: WorkloadSpec) -> str:
    """Hash of what shapes a container besides its image (a change needs new containers)."""
    shaped = {
        "command": spec.command,
        "env": dict(sorted(spec.env.items())),
        "ports": [p.model_dump(mode="json") for p in spec.ports],
        "labels": dict(sorted(spec.labels.items())),
        "healthcheck": spec.healthcheck.model_dump(mode="json") if spec.healthcheck else None,
        "stop_grace_period": spec.stop_grace_period,
    }
    return hashlib.sha256(json.dumps(shaped, sort_keys=True).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Box:
    """One container of a group, as listed."""

    id: str
    name: str
    labels: dict[str, str]
    state: str  # created, running, restarting, exited, paused, dead, removing
    healthy: bool
    created: int

    @property
    def role(self) -> str:
        return self.labels.get(LABEL_ROLE, ROLE_REPLICA)

    @property
    def revision(self) -> int:
        return _int(self.labels.get(LABEL_REVISION), 1)

    @property
    def slot(self) -> int:
        return _int(self.labels.get(LABEL_SLOT), 0)

    @property
    def desired(self) -> int:
        return _int(self.labels.get(LABEL_DESIRED), 0)

    @property
    def seq(self) -> int:
        return _int(self.labels.get(LABEL_ANCHOR_SEQ), 0)

    @property
    def image(self) -> str:
        return self.labels.get(LABEL_IMAGE, "")

    @property
    def has_healthcheck(self) -> bool:
        return self.labels.get(LABEL_HEALTHCHECK) == "true"

    @property
    def running(self) -> bool:
        return self.state == "running"

    @property
    def ready(self) -> bool:
        return self.running and (self.healthy or not self.has_healthcheck)


@dataclass(frozen=True)
class Record:
    """The committed state of a workload (from the newest anchor, or recovered from replicas)."""

    desired: int
    revision: int
    image: str
    history: list[Revision]
    spec_hash: str
    update_state: str | None = None
    message: str | None = None


@dataclass
class Group:
    name: str
    anchors: list[Box]  # newest (highest seq) first
    replicas: list[Box]
    #: Canary replicas (``scalewise.role=canary``): never in the record, the counts or the version.
    canaries: list[Box] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.anchors and not self.replicas

    @property
    def anchor(self) -> Box | None:
        return self.anchors[0] if self.anchors else None

    def version(self) -> str:
        parts = sorted(f"{b.id}:{b.revision}:{b.desired}" for b in [*self.anchors, *self.replicas])
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]

    def record(self) -> Record:
        anchor = self.anchor
        if anchor is not None:
            labels = anchor.labels
            history = parse_history(labels.get(LABEL_REVISIONS))
            revision = anchor.revision
            image = anchor.image
            if not history:
                history = [Revision(number=revision, image=image)]
            return Record(
                desired=anchor.desired,
                revision=revision,
                image=image,
                history=history,
                spec_hash=labels.get(LABEL_SPEC_HASH, ""),
                update_state=labels.get(LABEL_UPDATE_STATE) or None,
                message=labels.get(LABEL_UPDATE_MESSAGE) or None,
            )
        if not self.replicas:
            raise NotFoundError(f"docker workload {self.name!r}: no containers of it exist")
        # No anchor (pruned?): the oldest revision present is the committed one.
        revision = min(b.revision for b in self.replicas)
        of_rev = sorted((b for b in self.replicas if b.revision == revision), key=lambda b: b.created)
        newest = of_rev[-1]
        history = parse_history(newest.labels.get(LABEL_REVISIONS)) or [Revision(number=revision, image=newest.image)]
        history = [r for r in history if r.number <= revision] or history
        return Record(
            desired=newest.desired,
            revision=revision,
            image=newest.image,
            history=history,
            spec_hash=newest.labels.get(LABEL_SPEC_HASH, ""),
            message="anchor container missing; state recovered from replica labels",
        )


__all__ = [
    "LABEL_ANCHOR_SEQ",
    "LABEL_CANARY_HASH",
    "LABEL_CANARY_TEMPLATE",
    "LABEL_CANARY_WEIGHT",
    "LABEL_DESIRED",
    "LABEL_HEALTHCHECK",
    "LABEL_IMAGE",
    "LABEL_MANAGED",
    "LABEL_REVISION",
    "LABEL_REVISIONS",
    "LABEL_ROLE",
    "LABEL_SLOT",
    "LABEL_SPEC_HASH",
    "LABEL_UPDATE_MESSAGE",
    "LABEL_UPDATE_STATE",
    "LABEL_WORKLOAD",
    "ROLE_ANCHOR",
    "ROLE_CANARY",
    "ROLE_REPLICA",
    "SWARM_TASK_LABEL",
    "Box",
    "Group",
    "Record",
    "template_hash",
]
