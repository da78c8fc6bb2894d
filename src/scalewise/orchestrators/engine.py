"""Plain Docker engine adapter: one workload is a replica group of labelled containers.

Only this module, ``swarm.py`` and ``docker_common.py`` import the ``docker`` SDK. The engine has no service object, so
scalewise is the controller: it creates, replaces and removes the containers itself, and keeps all
of its state in container labels so that any new adapter instance (or a scalewise process started
after another one was killed mid-operation) reads everything back from the engine.

Containers and labels
---------------------
Replica containers are named ``<workload>-r<revision>-<slot>-<random>`` and carry:

=========================  ===========================================================
``scalewise.workload``     the workload name (with ``scalewise.managed=true``: ownership)
``scalewise.role``         ``replica``
``scalewise.revision``     revision number the container runs
``scalewise.image``        image of that revision
``scalewise.spec-hash``    hash of the container-shaping part of the spec (command, env,
                           ports, labels, health check, grace period; not image/replicas)
``scalewise.slot``         replica slot ``1..n`` (scale out fills the lowest free slots)
``scalewise.desired``      desired replica count when the container was created
``scalewise.revisions``    history: every revision's whole rendered spec and hash, newest last,
                           capped at :data:`MAX_REVISIONS` (``history.py``, as on Swarm)
``scalewise.healthcheck``  ``true`` when the container has a Docker health check
=========================  ===========================================================

Labels of a container cannot be changed, so the *current* desired count, revision, image and
history live on an **anchor**: a container created from the workload's image but never started
(``scalewise.role=anchor``), named ``<workload>-anchor-<seq>``. Every write of that record creates
a new anchor with ``seq + 1`` first and removes the older ones afterwards, so at every instant at
least one anchor exists and the one with the highest ``scalewise.anchor-seq`` wins. The anchor is
what keeps ``desired=0`` readable when no replica exists. (``docker container prune`` would delete
anchors: the adapter then falls back to the replica labels - revision of the oldest revision
present, desired = the ``scalewise.desired`` label of its newest container - and the next write
recreates the anchor.) Containers of Swarm tasks are never considered part of a group.

Replicas run with restart policy ``unless-stopped``, ``--init`` (so SIGTERM reaches the process and
stops take milliseconds, not the grace period), the spec's health check as ``CMD-SHELL`` with
nanosecond intervals, ``StopTimeout`` = the grace period, and host ports only for ``published``
ports. They use the default bridge network.

Version token and locking
-------------------------
``version`` is a hash over the sorted ``(container id, revision, desired label)`` of every container
of the group, anchors included. Any scale, update or foreign removal changes it; health changes do
not. Writes re-read the group and compare with ``expected_version`` first, raising
:class:`ConflictError` when it changed. This check is **not atomic** like Swarm's ``Version.Index``:
a writer outside scalewise (``docker rm``...) acting between the check and our writes is not
detected. Writers inside scalewise are serialised by a per-workload lock: a process-wide
``threading.Lock`` plus an ``flock`` on ``$SCALEWISE_STATE/locks/engine-<workload>.lock`` (default
``/tmp/scalewise``), so two scalewise processes on the same host do not interleave writes and a
process killed mid-update drops its lock with it (the next one then sees the leftovers and
reconciles them). Two hosts driving one remote engine are not serialised.

Rolling updates and crash recovery
----------------------------------
``update_image``/``rollback`` (and ``apply`` with a changed spec) run the rolling update here, and
synchronously: batches of ``update.parallelism`` (0 = all) old containers are replaced; with
``start-first`` (default) the new containers of a batch are started and must become healthy (Docker
health status ``healthy``, or running for ``update.monitor`` without a health check) before the old
ones of that batch are stopped, so the ready count never drops below desired. ``stop-first`` (also
forced when the spec publishes host ports, which two containers cannot share) stops the batch
first. The whole rollout is bounded by ``update.timeout``. A new container that turns unhealthy,
exits, restarts or times out fails the rollout: new containers are removed, old ones that were
already replaced are recreated (and awaited) before the healthy new ones go, the revision stays,
the anchor records ``update_state=rollback_completed`` and :class:`RolloutFailed` is raised.

A process killed mid-update leaves containers of two revisions. ``read`` then reports
``updating=True``; ``apply``, ``set_replicas``, ``wait_converged``, ``update_image`` and
``rollback`` first reconcile: if the newest revision's containers are all healthy and exactly
``desired`` of them exist, the update is finished (older containers removed, anchor moved to the new
revision); otherwise the newer containers are removed and missing old ones recreated (rolled back).
Reconciling also brings the count back to ``desired`` (creates missing, removes extra, starts
created-but-never-started containers), which makes every write safe to repeat.

Waiting
-------
``wait_converged`` first reconciles (skipped while another operation holds the lock: a live
update in another thread or process is watched, never rolled back; leftovers seen later while the
lock is free are reconciled then), then polls ``read`` (calling ``on_progress`` each time) until desired == ready
== updated == running and no second revision is present (``converged``) or the bound passes
(``timeout``). ``rolled_back``: *this* wait rolled back an interrupted update. As with the Swarm
adapter, a wait that starts after a rollback already finished (here: after ``update_image`` raised
:class:`RolloutFailed`) reports ``converged`` while ``state.update_state`` still says
``rollback_completed`` until the next scale or update.

Errors
------
SDK and transport errors are mapped as the table in :mod:`scalewise.orchestrators.docker_common`
says (only ``TransientError`` is ever retried), with ``broad_transient``: any SDK or transport failure
that is not an HTTP answer (``OSError``, ``requests`` errors, a bare ``DockerException``, e.g. no
engine when the client is created) is a ``TransientError``. An image that is missing and cannot be
pulled is a ``PermanentError`` with the engine's message.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import secrets
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker
import docker.errors

from scalewise.errors import (
    ConflictError,
    NotFoundError,
    PermanentError,
    RolloutFailed,
    ScalewiseError,
    TransientError,
)
from scalewise.model import ConvergeResult, Revision, WorkloadState
from scalewise.orchestrators import docker_common
from scalewise.orchestrators.base import ProgressFn
from scalewise.orchestrators.docker_common import (
    DEFAULT_TIMEOUT_S,
    LABEL_MANAGED,
    LABEL_REVISION,
    LABEL_REVISIONS,
    LABEL_ROLE,
    LABEL_SPEC_HASH,
    LABEL_WORKLOAD,
    ROLE_ANCHOR,
    ROLE_REPLICA,
)
from scalewise.orchestrators.docker_common import ns as _ns
from scalewise.orchestrators.history import MAX_REVISIONS, dump_history, parse_history
from scalewise.revisions import RollbackPlan, record_revision, restore, spec_revision
from scalewise.spec import WorkloadSpec

LABEL_IMAGE = "scalewise.image"
LABEL_SLOT = "scalewise.slot"
LABEL_DESIRED = "scalewise.desired"
LABEL_HEALTHCHECK = "scalewise.healthcheck"
LABEL_ANCHOR_SEQ = "scalewise.anchor-seq"
LABEL_UPDATE_STATE = "scalewise.update-state"
LABEL_UPDATE_MESSAGE = "scalewise.update-message"
SWARM_TASK_LABEL = "com.docker.swarm.task.id"

LOCK_TIMEOUT_S = 60.0
POLL_S = 0.25


# --------------------------------------------------------------------------------- error mapping


def map_docker_error(exc: BaseException, what: str) -> ScalewiseError:
    """Translate an SDK/transport exception into the scalewise taxonomy (``broad_transient``)."""
    return docker_common.map_docker_error(exc, what, broad_transient=True)


def _mapped(what: str) -> contextlib.AbstractContextManager[None]:
    return docker_common.mapped(what, broad_transient=True)


# --------------------------------------------------------------------------------- helpers


def _cause(exc: BaseException) -> str:
    """The engine's own message behind a mapped error."""
    cause = exc.__cause__
    if isinstance(cause, docker.errors.APIError):
        return str(cause.explanation or cause)
    return str(cause or exc)


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
class _Box:
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
class _Record:
    """The committed state of a workload (from the newest anchor, or recovered from replicas)."""

    desired: int
    revision: int
    image: str
    history: list[Revision]
    spec_hash: str
    update_state: str | None = None
    message: str | None = None


@dataclass
class _Group:
    name: str
    anchors: list[_Box]  # newest (highest seq) first
    replicas: list[_Box]

    @property
    def empty(self) -> bool:
        return not self.anchors and not self.replicas

    @property
    def anchor(self) -> _Box | None:
        return self.anchors[0] if self.anchors else None

    def version(self) -> str:
        parts = sorted(f"{b.id}:{b.revision}:{b.desired}" for b in [*self.anchors, *self.replicas])
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]

    def record(self) -> _Record:
        anchor = self.anchor
        if anchor is not None:
            labels = anchor.labels
            history = parse_history(labels.get(LABEL_REVISIONS))
            revision = anchor.revision
            image = anchor.image
            if not history:
                history = [Revision(number=revision, image=image)]
            return _Record(
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
        return _Record(
            desired=newest.desired,
            revision=revision,
            image=newest.image,
            history=history,
            spec_hash=newest.labels.get(LABEL_SPEC_HASH, ""),
            message="anchor container missing; state recovered from replica labels",
        )


# --------------------------------------------------------------------------------- locking

_thread_locks: dict[str, threading.Lock] = {}
_thread_locks_guard = threading.Lock()


def _lock_dir() -> Path:
    return Path(os.environ.get("SCALEWISE_STATE", "/tmp/scalewise")) / "locks"


@contextlib.contextmanager
def workload_lock(name: str, timeout_s: float) -> Iterator[None]:
    """Per-workload lock across threads (threading.Lock) and processes on this host (flock)."""
    with _thread_locks_guard:
        tlock = _thread_locks.setdefault(name, threading.Lock())
    deadline = time.monotonic() + max(0.0, timeout_s)
    if not tlock.acquire(timeout=max(0.0, timeout_s)):
        raise ConflictError(f"docker workload {name!r}: another operation holds its lock; re-read and retry")
    try:
        directory = _lock_dir()
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(directory / f"engine-{name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise ConflictError(
                            f"docker workload {name!r}: another scalewise process holds its lock; re-read and retry"
                        ) from None
                    time.sleep(0.05)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
    finally:
        tlock.release()


class _RolloutError(Exception):
    """Internal: a new container of a rolling update did not become healthy."""


# --------------------------------------------------------------------------------- adapter


class EngineOrchestrator:
    """The :class:`~scalewise.orchestrators.base.Orchestrator` for a plain Docker engine."""

    target = "docker"

    def __init__(self, client: docker.DockerClient) -> None:
        self.client = client
        self.api: docker.APIClient = client.api

    @classmethod
    def from_env(
        cls, timeout_s: float = DEFAULT_TIMEOUT_S, base_url: str | None = None, version: str | None = None
    ) -> EngineOrchestrator:
        """Configured from DOCKER_HOST / DOCKER_TLS_VERIFY / DOCKER_CERT_PATH like the docker CLI, or
        from ``base_url``. ``version=None`` asks the engine for its API version (needs it reachable)."""
        with _mapped("connecting to the Docker engine"):
            if base_url is not None:
                client = docker.DockerClient(base_url=base_url, version=version or "auto", timeout=int(timeout_s))
            else:
                client = docker.from_env(timeout=int(timeout_s), version=version or "auto")
        return cls(client)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()

    # ----------------------------------------------------------------------------- reading

    def _list(self, name: str) -> _Group:
        what = f"docker workload {name!r}: list containers"
        filters = {"label": [f"{LABEL_WORKLOAD}={name}", f"{LABEL_MANAGED}=true"]}
        with _mapped(what):
            listed: list[dict[str, Any]] = self.api.containers(all=True, filters=filters)
            healthy_ids = {c["Id"] for c in self.api.containers(filters={**filters, "health": "healthy"})}
        anchors: list[_Box] = []
        replicas: list[_Box] = []
        for c in listed:
            labels: dict[str, str] = c.get("Labels") or {}
            if SWARM_TASK_LABEL in labels or labels.get(LABEL_WORKLOAD) != name:
                continue
            names = c.get("Names") or [""]
            box = _Box(
                id=c["Id"],
                name=str(names[0]).lstrip("/"),
                labels=labels,
                state=str(c.get("State", "")),
                healthy=c["Id"] in healthy_ids,
                created=int(c.get("Created", 0) or 0),
            )
            if box.state in ("removing", "dead"):
                if box.role == ROLE_REPLICA:
                    replicas.append(box)
                continue
            (anchors if box.role == ROLE_ANCHOR else replicas).append(box)
        anchors.sort(key=lambda b: b.seq, reverse=True)
        replicas.sort(key=lambda b: (b.revision, b.slot, b.created))
        return _Group(name=name, anchors=anchors, replicas=replicas)

    def _state(self, group: _Group) -> WorkloadState:
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
        return self._state(self._list(spec.name))

    def exists(self, spec: WorkloadSpec) -> bool:
        return not self._list(spec.name).empty

    def revisions(self, spec: WorkloadSpec) -> list[Revision]:
        return list(self._list(spec.name).record().history)

    # ----------------------------------------------------------------------------- low-level writes

    def _ensure_image(self, name: str, image: str) -> None:
        what = f"docker workload {name!r}: image {image!r}"
        try:
            with _mapped(what):
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
            with _mapped(what):
                self.api.pull(repo, tag=tag)
        except TransientError as exc:
            text = str(exc).lower()
            if any(s in text for s in ("timeout", "connection refused", "unreachable")):
                raise
            raise PermanentError(f"{what}: not present on the engine and could not be pulled: {_cause(exc)}") from None
        except PermanentError as exc:
            raise PermanentError(f"{what}: not present on the engine and could not be pulled: {_cause(exc)}") from None

    def _new_anchor(
        self,
        spec: WorkloadSpec,
        group: _Group,
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
        with _mapped(f"docker workload {spec.name!r}: write anchor"):
            self.api.create_container(
                image,
                name=f"{spec.name}-anchor-{seq}",
                labels=labels,
                command=["true"],
                host_config=self.api.create_host_config(),
            )
        for old in group.anchors:
            self._remove_box(spec.name, old, grace_s=0)
        group.anchors = []  # callers re-list after writing

    def _create_replica(
        self,
        spec: WorkloadSpec,
        *,
        image: str,
        revision: int,
        slot: int,
        desired: int,
        history: list[Revision],
        spec_hash: str,
    ) -> str:
        labels = {
            **spec.labels,
            LABEL_WORKLOAD: spec.name,
            LABEL_MANAGED: "true",
            LABEL_ROLE: ROLE_REPLICA,
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
        name = f"{spec.name}-r{revision}-{slot}-{secrets.token_hex(3)}"
        what = f"docker workload {spec.name!r}: create container {name}"
        with _mapped(what):
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
            with _mapped(f"docker workload {spec.name!r}: start container {name}"):
                self.api.start(cid)
        except ScalewiseError:
            with contextlib.suppress(ScalewiseError), _mapped(what):
                self.api.remove_container(cid, force=True)
            raise
        return cid

    def _remove_box(self, name: str, box: _Box, grace_s: float) -> None:
        what = f"docker workload {name!r}: remove container {box.name}"
        try:
            if box.state in ("running", "restarting", "paused") and grace_s > 0:
                with _mapped(what):
                    self.api.stop(box.id, timeout=math.ceil(grace_s))
            with _mapped(what):
                self.api.remove_container(box.id, force=True)
        except NotFoundError:
            return
        except ConflictError as exc:  # "removal already in progress"
            if "in progress" not in str(exc):
                raise

    def _remove_many(self, name: str, boxes: Iterable[_Box], grace_s: float) -> None:
        items = list(boxes)
        if len(items) <= 1:
            for box in items:
                self._remove_box(name, box, grace_s)
            return
        with ThreadPoolExecutor(max_workers=min(8, len(items))) as pool:
            for future in [pool.submit(self._remove_box, name, b, grace_s) for b in items]:
                future.result()

    @staticmethod
    def _free_slots(group: _Group, count: int) -> list[int]:
        used = {b.slot for b in group.replicas}
        slots: list[int] = []
        candidate = 1
        while len(slots) < count:
            if candidate not in used:
                slots.append(candidate)
            candidate += 1
        return slots

    # ----------------------------------------------------------------------------- reconciling

    def _converge_count(self, spec: WorkloadSpec, group: _Group, rec: _Record) -> bool:
        """Make the committed revision's container count equal ``desired``. True if it wrote."""
        current = [b for b in group.replicas if b.revision == rec.revision]
        wrote = False
        for box in current:
            if box.state in ("created", "exited"):
                with _mapped(f"docker workload {spec.name!r}: start container {box.name}"):
                    self.api.start(box.id)
                wrote = True
        dead = [b for b in current if b.state in ("dead", "removing")]
        if dead:
            self._remove_many(spec.name, dead, grace_s=0)
            current = [b for b in current if b not in dead]
            wrote = True
        if len(current) < rec.desired:
            for slot in self._free_slots(group, rec.desired - len(current)):
                self._create_replica(
                    spec,
                    image=rec.image,
                    revision=rec.revision,
                    slot=slot,
                    desired=rec.desired,
                    history=rec.history,
                    spec_hash=rec.spec_hash or template_hash(spec),
                )
            wrote = True
        elif len(current) > rec.desired:
            # Scale in: not-ready first, then the newest (highest slot, latest created).
            victims = sorted(current, key=lambda b: (b.ready, -b.slot, -b.created))
            self._remove_many(spec.name, victims[: len(current) - rec.desired], spec.stop_grace_period)
            wrote = True
        return wrote

    def _reconcile(self, spec: WorkloadSpec) -> str:
        """Finish or roll back an interrupted update, then converge the count (lock held).

        Returns ``""`` when nothing had to be repaired, ``"finished"`` or ``"rolled_back"`` when
        leftovers of an interrupted update were resolved, ``"repaired"`` for count repairs.
        """
        group = self._list(spec.name)
        if group.empty:
            raise NotFoundError(f"docker workload {spec.name!r}: no containers of it exist")
        rec = group.record()
        outcome = ""
        newer = [b for b in group.replicas if b.revision > rec.revision]
        if newer:
            newest_rev = max(b.revision for b in newer)
            candidates = [b for b in newer if b.revision == newest_rev]
            if len(candidates) == rec.desired and all(b.ready for b in candidates):
                others = [b for b in group.replicas if b.revision != newest_rev]
                self._remove_many(spec.name, others, spec.stop_grace_period)
                sample = max(candidates, key=lambda b: b.created)
                history = parse_history(sample.labels.get(LABEL_REVISIONS)) or [
                    *rec.history,
                    Revision(number=newest_rev, image=sample.image),
                ]
                self._new_anchor(
                    spec,
                    group,
                    desired=rec.desired,
                    revision=newest_rev,
                    image=sample.image,
                    history=history,
                    spec_hash=sample.labels.get(LABEL_SPEC_HASH, ""),
                    update_state="completed",
                    message=f"finished an interrupted update to revision {newest_rev}",
                )
                outcome = "finished"
            else:
                self._remove_many(spec.name, newer, grace_s=0)
                self._new_anchor(
                    spec,
                    group,
                    desired=rec.desired,
                    revision=rec.revision,
                    image=rec.image,
                    history=rec.history,
                    spec_hash=rec.spec_hash,
                    update_state="rollback_completed",
                    message=(
                        f"rolled back an interrupted update to revision {newest_rev}"
                        f" ({len(candidates)} new containers, {sum(b.ready for b in candidates)} ready,"
                        f" {rec.desired} desired)"
                    ),
                )
                outcome = "rolled_back"
            group = self._list(spec.name)
            rec = group.record()
        older = [b for b in group.replicas if b.revision < rec.revision]
        if older:
            self._remove_many(spec.name, older, spec.stop_grace_period)
            group = self._list(spec.name)
            outcome = outcome or "repaired"
        if group.anchor is None:
            self._new_anchor(
                spec,
                group,
                desired=rec.desired,
                revision=rec.revision,
                image=rec.image,
                history=rec.history,
                spec_hash=rec.spec_hash,
            )
            group = self._list(spec.name)
            outcome = outcome or "repaired"
        elif len(group.anchors) > 1:
            self._remove_many(spec.name, group.anchors[1:], grace_s=0)
            group = self._list(spec.name)
        if self._converge_count(spec, group, group.record()):
            outcome = outcome or "repaired"
        return outcome

    def _checked(self, spec: WorkloadSpec, expected_version: str | None) -> _Group:
        group = self._list(spec.name)
        if group.empty:
            raise NotFoundError(f"docker workload {spec.name!r}: no containers of it exist")
        version = group.version()
        if expected_version is not None and version != expected_version:
            raise ConflictError(
                f"docker workload {spec.name!r}: observed version {expected_version} is stale"
                f" (now {version}); re-read and decide again"
            )
        return group

    # ----------------------------------------------------------------------------- rolling update

    def _await_healthy(self, spec: WorkloadSpec, ids: list[str], deadline: float) -> None:
        """Wait until every container is healthy (or running for update.monitor without a check)."""
        pending = set(ids)
        running_since: dict[str, float] = {}
        while pending:
            for cid in sorted(pending):
                what = f"docker workload {spec.name!r}: inspect new container"
                try:
                    with _mapped(what):
                        info = self.api.inspect_container(cid)
                except NotFoundError:
                    raise _RolloutError(f"new container {cid[:12]} disappeared") from None
                except TransientError:
                    continue  # the engine blinked: absorbed until this wait's own deadline
                name = str(info.get("Name", cid[:12])).lstrip("/")
                st = info.get("State") or {}
                status = st.get("Status")
                if status in ("exited", "dead") or int(info.get("RestartCount") or 0) > 0 or st.get("Restarting"):
                    raise _RolloutError(
                        f"new container {name} exited (exit code {st.get('ExitCode')}) {st.get('Error') or ''}".strip()
                    )
                health = st.get("Health")
                if health:
                    hstatus = health.get("Status")
                    if hstatus == "healthy":
                        pending.discard(cid)
                    elif hstatus == "unhealthy":
                        log = health.get("Log") or []
                        out = str(log[-1].get("Output", "")).strip()[:200] if log else ""
                        detail = f": {out}" if out else ""
                        raise _RolloutError(f"new container {name} is unhealthy{detail}")
                elif status == "running":
                    first = running_since.setdefault(cid, time.monotonic())
                    if time.monotonic() - first >= spec.update.monitor:
                        pending.discard(cid)
            if not pending:
                return
            if time.monotonic() >= deadline:
                raise _RolloutError(
                    f"timed out after {spec.update.timeout:g}s: {len(ids) - len(pending)} of {len(ids)}"
                    " new containers healthy"
                )
            time.sleep(POLL_S)

    def _rolling_update(self, spec: WorkloadSpec, image: str, reason: str) -> WorkloadState:
        """Replace the committed revision's containers by ``image`` (lock held, group reconciled)."""
        name = spec.name
        self._ensure_image(name, image)
        group = self._list(name)
        rec = group.record()
        new_hash = template_hash(spec)
        # New containers always get a new number (it names them); the history keeps the whole spec.
        history, new_rev = record_revision(
            rec.history,
            spec.with_image(image),
            datetime.now(UTC),
            at_least=max([b.revision for b in group.replicas] + [rec.revision]),
            force_new=True,
        )
        old = sorted((b for b in group.replicas if b.revision == rec.revision), key=lambda b: b.slot)
        desired = rec.desired
        stop_first = spec.update.order == "stop-first" or any(p.published for p in spec.ports)
        batch = spec.update.parallelism or max(1, len(old))
        deadline = time.monotonic() + spec.update.timeout
        replaced: list[_Box] = []  # old containers already removed
        created: list[str] = []
        try:
            for start in range(0, len(old), batch):
                chunk = old[start : start + batch]
                if stop_first:
                    self._remove_many(name, chunk, spec.stop_grace_period)
                    replaced.extend(chunk)
                new_ids: list[str] = []
                for box in chunk:
                    cid = self._create_replica(
                        spec,
                        image=image,
                        revision=new_rev,
                        slot=box.slot,
                        desired=desired,
                        history=history,
                        spec_hash=new_hash,
                    )
                    new_ids.append(cid)
                    created.append(cid)
                self._await_healthy(spec, new_ids, deadline)
                if not stop_first:
                    self._remove_many(name, chunk, spec.stop_grace_period)
                    replaced.extend(chunk)
                if spec.update.delay and start + batch < len(old):
                    time.sleep(spec.update.delay)
        except Exception as exc:
            message = str(exc)
            self._undo(spec, rec, new_rev, replaced)
            group = self._list(name)
            self._new_anchor(
                spec,
                group,
                desired=rec.desired,
                revision=rec.revision,
                image=rec.image,
                history=rec.history,
                spec_hash=rec.spec_hash,
                update_state="rollback_completed",
                message=f"update to {image} (revision {new_rev}) failed: {message}",
            )
            if isinstance(exc, _RolloutError):
                raise RolloutFailed(name, message, rolled_back_to=rec.revision) from None
            raise
        group = self._list(name)
        self._new_anchor(
            spec,
            group,
            desired=desired,
            revision=new_rev,
            image=image,
            history=history,
            spec_hash=new_hash,
            update_state="completed",
            message=f"{reason} to {image} completed",
        )
        return self.read(spec)

    def _undo(self, spec: WorkloadSpec, rec: _Record, new_rev: int, replaced: list[_Box]) -> None:
        """Remove the new revision's containers, recreating the old ones it already replaced."""
        name = spec.name
        group = self._list(name)
        new = [b for b in group.replicas if b.revision == new_rev]
        self._remove_many(name, [b for b in new if not b.ready], grace_s=0)
        restored: list[str] = []
        old_spec_hash = rec.spec_hash or template_hash(spec)
        for box in replaced:
            restored.append(
                self._create_replica(
                    spec,
                    image=rec.image,
                    revision=rec.revision,
                    slot=box.slot,
                    desired=rec.desired,
                    history=rec.history,
                    spec_hash=old_spec_hash,
                )
            )
        if restored:
            with contextlib.suppress(_RolloutError):
                self._await_healthy(spec, restored, time.monotonic() + spec.update.timeout)
        self._remove_many(name, [b for b in new if b.ready], spec.stop_grace_period)

    # ----------------------------------------------------------------------------- protocol writes

    def apply(self, spec: WorkloadSpec, replicas: int | None = None) -> WorkloadState:
        if replicas is not None and replicas < 0:
            raise PermanentError(f"docker workload {spec.name!r}: replicas cannot be negative ({replicas})")
        with workload_lock(spec.name, spec.update.timeout + LOCK_TIMEOUT_S):
            group = self._list(spec.name)
            if group.empty:
                self._ensure_image(spec.name, spec.image)
                desired = spec.replicas.start if replicas is None else replicas
                spec_hash = template_hash(spec)
                history = [spec_revision(spec, 1, datetime.now(UTC))]
                self._new_anchor(
                    spec,
                    group,
                    desired=desired,
                    revision=1,
                    image=spec.image,
                    history=history,
                    spec_hash=spec_hash,
                )
                group = self._list(spec.name)
                self._converge_count(spec, group, group.record())
                return self.read(spec)
            self._reconcile(spec)
            group = self._list(spec.name)
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
            self._reconcile(spec)
            group = self._list(spec.name)
            rec = group.record()
            if replicas != rec.desired:
                self._rescale(spec, group, rec, replicas)
            return self.read(spec)

    def _rescale(self, spec: WorkloadSpec, group: _Group, rec: _Record, replicas: int) -> None:
        """Record the new desired count (a new anchor), then converge the container count to it."""
        self._new_anchor(
            spec,
            group,
            desired=replicas,
            revision=rec.revision,
            image=rec.image,
            history=rec.history,
            spec_hash=rec.spec_hash,
            message=f"scaled to {replicas}",
        )
        group = self._list(spec.name)
        self._converge_count(spec, group, group.record())

    def update_image(self, spec: WorkloadSpec, image: str, expected_version: str) -> WorkloadState:
        try:
            target_spec = spec.with_image(image)
        except ValueError as exc:
            raise PermanentError(f"docker workload {spec.name!r}: bad image {image!r}: {exc}") from None
        with workload_lock(spec.name, LOCK_TIMEOUT_S):
            self._checked(spec, expected_version)
            self._reconcile(spec)
            rec = self._list(spec.name).record()
            if rec.image == image:
                return self.read(spec)
            return self._rolling_update(target_spec, image, "update")

    def apply_rollback(self, spec: WorkloadSpec, plan: RollbackPlan) -> WorkloadState:
        """Roll the containers over to the plan's target revision's whole spec (a new revision)."""
        restored = restore(spec, plan.target)
        with workload_lock(spec.name, restored.update.timeout + LOCK_TIMEOUT_S):
            self._reconcile(restored)
            return self._rolling_update(restored, restored.image, "rollback")

    def remove(self, spec: WorkloadSpec) -> None:
        with workload_lock(spec.name, LOCK_TIMEOUT_S):
            group = self._list(spec.name)
            self._remove_many(spec.name, group.replicas, min(spec.stop_grace_period, 10.0))
            self._remove_many(spec.name, group.anchors, grace_s=0)

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

        def reconcile(lock_wait_s: float) -> None:
            # A held lock means another scalewise operation is changing the workload right now:
            # never touch its containers, just watch. ConflictError also covers an engine 409.
            nonlocal outcome
            with contextlib.suppress(ConflictError), workload_lock(spec.name, lock_wait_s):
                outcome = self._reconcile(spec) or outcome

        def read() -> WorkloadState:
            state = self.read(spec)
            if state.updating:
                # Two revisions while nobody holds the lock: the updater died; resolve it now.
                reconcile(0.0)
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

        reconcile(min(max(0.0, timeout_s), 1.0))
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

__all__ = ["MAX_REVISIONS", "EngineOrchestrator", "map_docker_error", "template_hash", "workload_lock"]
