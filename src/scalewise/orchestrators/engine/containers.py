"""The engine adapter's container calls: one Docker API call (or a small fixed sequence) per method.

:class:`Containers` lists a workload's group and creates, starts and removes its containers (replicas
and anchors); it decides nothing. SDK and transport errors are mapped with ``broad_transient``.
"""

from __future__ import annotations

import contextlib
import math
import secrets
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import docker
import docker.errors

from scalewise.errors import ConflictError, NotFoundError, PermanentError, ScalewiseError, TransientError
from scalewise.model import Revision
from scalewise.orchestrators import docker_common
from scalewise.orchestrators.docker_common import ns as _ns
from scalewise.orchestrators.engine.labels import (
    LABEL_ANCHOR_SEQ,
    LABEL_DESIRED,
    LABEL_HEALTHCHECK,
    LABEL_IMAGE,
    LABEL_MANAGED,
    LABEL_REVISION,
    LABEL_REVISIONS,
    LABEL_ROLE,
    LABEL_SLOT,
    LABEL_SPEC_HASH,
    LABEL_UPDATE_MESSAGE,
    LABEL_UPDATE_STATE,
    LABEL_WORKLOAD,
    ROLE_ANCHOR,
    ROLE_CANARY,
    ROLE_REPLICA,
    SWARM_TASK_LABEL,
    Box,
    Group,
    Record,
)
from scalewise.orchestrators.history import dump_history
from scalewise.spec import WorkloadSpec


def map_docker_error(exc: BaseException, what: str) -> ScalewiseError:
    """Translate an SDK/transport exception into the scalewise taxonomy (``broad_transient``)."""
    return docker_common.map_docker_error(exc, what, broad_transient=True)


def mapped(what: str) -> contextlib.AbstractContextManager[None]:
    return docker_common.mapped(what, broad_transient=True)


def cause(exc: BaseException) -> str:
    """The engine's own message behind a mapped error."""
    cause = exc.__cause__
    if isinstance(cause, docker.errors.APIError):
        return str(cause.explanation or cause)
    return str(cause or exc)


class Containers:
    """A workload's containers on one engine (``api``: the SDK's low-level client)."""

    def __init__(self, api: docker.APIClient) -> None:
        self.api = api

    def group(self, name: str) -> Group:
        what = f"docker workload {name!r}: list containers"
        filters = {"label": [f"{LABEL_WORKLOAD}={name}", f"{LABEL_MANAGED}=true"]}
        with mapped(what):
            listed: list[dict[str, Any]] = self.api.containers(all=True, filters=filters)
            healthy_ids = {c["Id"] for c in self.api.containers(filters={**filters, "health": "healthy"})}
        anchors: list[Box] = []
        replicas: list[Box] = []
        canaries: list[Box] = []
        for c in listed:
            labels: dict[str, str] = c.get("Labels") or {}
            if SWARM_TASK_LABEL in labels or labels.get(LABEL_WORKLOAD) != name:
                continue
            names = c.get("Names") or [""]
            box = Box(
                id=c["Id"],
                name=str(names[0]).lstrip("/"),
                labels=labels,
                state=str(c.get("State", "")),
                healthy=c["Id"] in healthy_ids,
                created=int(c.get("Created", 0) or 0),
            )
            if box.role == ROLE_CANARY:
                canaries.append(box)
                continue
            if box.state in ("removing", "dead"):
                if box.role == ROLE_REPLICA:
                    replicas.append(box)
                continue
            (anchors if box.role == ROLE_ANCHOR else replicas).append(box)
        anchors.sort(key=lambda b: b.seq, reverse=True)
        replicas.sort(key=lambda b: (b.revision, b.slot, b.created))
        canaries.sort(key=lambda b: (b.slot, b.created))
        return Group(name=name, anchors=anchors, replicas=replicas, canaries=canaries)

    def ensure_image(self, name: str, image: str) -> None:
        what = f"docker workload {name!r}: image {image!r}"
        try:
            with mapped(what):
                self.api.inspect_image(image)
            return
        except PermanentError:  # ImageNotFound / NotFoundError: try to pull it
            pass
        if "@" in image:
            repo, tag = image, None
        elif ":" in image.rsplit("/", 1)[-1]:
            repo, _, tag = image.rpartition(":")
        else:
            repo, tag = image, "latest"
        try:
            with mapped(what):
                self.api.pull(repo, tag=tag)
        except TransientError as exc:
            text = str(exc).lower()
            if any(s in text for s in ("timeout", "connection refused", "unreachable")):
                raise
            raise PermanentError(f"{what}: not present on the engine and could not be pulled: {cause(exc)}") from None
        except PermanentError as exc:
            raise PermanentError(f"{what}: not present on the engine and could not be pulled: {cause(exc)}") from None

    def new_anchor(
        self,
        spec: WorkloadSpec,
        group: Group,
        *,
        desired: int,
        revision: int,
        image: str,
        history: list[Revision],
        spec_hash: str,
        update_state: str | None = None,
        message: str | None = None,
    ) -> None:
        """Write the committed record: create anchor ``seq+1``, then remove the older anchors."""
        seq = max((b.seq for b in group.anchors), default=0) + 1
        labels = {
            LABEL_WORKLOAD: spec.name,
            LABEL_MANAGED: "true",
            LABEL_ROLE: ROLE_ANCHOR,
            LABEL_ANCHOR_SEQ: str(seq),
            LABEL_DESIRED: str(desired),
            LABEL_REVISION: str(revision),
            LABEL_IMAGE: image,
            LABEL_SPEC_HASH: spec_hash,
            LABEL_REVISIONS: dump_history(history),
        }
        if update_state:
            labels[LABEL_UPDATE_STATE] = update_state
        if message:
            labels[LABEL_UPDATE_MESSAGE] = message[:500]
        with mapped(f"docker workload {spec.name!r}: write anchor"):
            self.api.create_container(
                image,
                name=f"{spec.name}-anchor-{seq}",
                labels=labels,
                command=["true"],
                host_config=self.api.create_host_config(),
            )
        for old in group.anchors:
            self.remove_box(spec.name, old, grace_s=0)
        group.anchors = []  # callers re-list after writing

    def rewrite_record(
        self,
        spec: WorkloadSpec,
        group: Group,
        rec: Record,
        *,
        desired: int | None = None,
        update_state: str | None = None,
        message: str | None = None,
    ) -> None:
        """Commit ``rec`` again (revision, image, history and spec hash kept), with a new desired count,
        update state or message when given."""
        self.new_anchor(
            spec,
            group,
            desired=rec.desired if desired is None else desired,
            revision=rec.revision,
            image=rec.image,
            history=rec.history,
            spec_hash=rec.spec_hash,
            update_state=update_state,
            message=message,
        )

    def create_replica(
        self,
        spec: WorkloadSpec,
        *,
        image: str,
        revision: int,
        slot: int,
        desired: int,
        history: list[Revision],
        spec_hash: str,
        role: str = ROLE_REPLICA,
        extra_labels: dict[str, str] | None = None,
    ) -> str:
        """Create and start one container of ``spec``: a replica, or (``role`` canary) a canary one."""
        labels = {
            **spec.labels,
            **(extra_labels or {}),
            LABEL_WORKLOAD: spec.name,
            LABEL_MANAGED: "true",
            LABEL_ROLE: role,
            LABEL_REVISION: str(revision),
            LABEL_IMAGE: image,
            LABEL_SPEC_HASH: spec_hash,
            LABEL_SLOT: str(slot),
            LABEL_DESIRED: str(desired),
            LABEL_REVISIONS: dump_history(history),
            LABEL_HEALTHCHECK: "true" if spec.healthcheck is not None else "false",
        }
        healthcheck: dict[str, Any] | None = None
        if spec.healthcheck is not None:
            hc = spec.healthcheck
            healthcheck = {
                "test": ["CMD-SHELL", hc.command],
                "interval": _ns(hc.interval),
                "timeout": _ns(hc.timeout),
                "retries": hc.retries,
                "start_period": _ns(hc.start_period),
            }
        ports: list[Any] = [(p.container, p.protocol) for p in spec.ports]
        bindings = {f"{p.container}/{p.protocol}": p.published for p in spec.ports if p.published is not None}
        kind = f"r{revision}" if role == ROLE_REPLICA else role
        name = f"{spec.name}-{kind}-{slot}-{secrets.token_hex(3)}"
        what = f"docker workload {spec.name!r}: create container {name}"
        with mapped(what):
            host_config = self.api.create_host_config(
                restart_policy={"Name": "unless-stopped"},
                init=True,
                port_bindings=bindings or None,
            )
            created = self.api.create_container(
                image,
                command=list(spec.command) if spec.command else None,
                name=name,
                labels=labels,
                environment=dict(spec.env) or None,
                healthcheck=healthcheck,
                ports=ports or None,
                host_config=host_config,
                stop_timeout=math.ceil(spec.stop_grace_period),
            )
        cid = str(created["Id"])
        try:
            with mapped(f"docker workload {spec.name!r}: start container {name}"):
                self.api.start(cid)
        except ScalewiseError:
            with contextlib.suppress(ScalewiseError), mapped(what):
                self.api.remove_container(cid, force=True)
            raise
        return cid

    def remove_box(self, name: str, box: Box, grace_s: float) -> None:
        what = f"docker workload {name!r}: remove container {box.name}"
        try:
            if box.state in ("running", "restarting", "paused") and grace_s > 0:
                with mapped(what):
                    self.api.stop(box.id, timeout=math.ceil(grace_s))
            with mapped(what):
                self.api.remove_container(box.id, force=True)
        except NotFoundError:
            return
        except ConflictError as exc:  # "removal already in progress"
            if "in progress" not in str(exc):
                raise

    def remove_many(self, name: str, boxes: Iterable[Box], grace_s: float) -> None:
        items = list(boxes)
        if len(items) <= 1:
            for box in items:
                self.remove_box(name, box, grace_s)
            return
        with ThreadPoolExecutor(max_workers=min(8, len(items))) as pool:
            for future in [pool.submit(self.remove_box, name, b, grace_s) for b in items]:
                future.result()

    @staticmethod
    def free_slots(group: Group, count: int, canary: bool = False) -> list[int]:
        used = {b.slot for b in (group.canaries if canary else group.replicas)}
        slots: list[int] = []
        candidate = 1
        while len(slots) < count:
            if candidate not in used:
                slots.append(candidate)
            candidate += 1
        return slots

    def start(self, name: str, box: Box) -> None:
        with mapped(f"docker workload {name!r}: start container {box.name}"):
            self.api.start(box.id)


__all__ = ["Containers", "cause", "map_docker_error", "mapped"]
