"""Docker Swarm adapter: one workload is one replicated Swarm service of the same name.

Only this module, the ``engine`` package and ``docker_common.py`` import the ``docker`` SDK.

Writes
------
Every write goes through the low-level ``APIClient.update_service(..., version=...)`` with the
*full* current service spec, modified (``TaskTemplate.ForceUpdate``, networks, placement... are kept),
and carries the observed ``Version.Index``. The ``version`` token of :class:`WorkloadState` is
``str(Version.Index)``. A write whose ``expected_version`` differs from the index read just before
it raises :class:`ConflictError` without writing; if another writer slips in between that read and
the write, dockerd answers "update out of sequence", which maps to :class:`ConflictError` too.

Errors
------
SDK and transport errors are mapped as the table in :mod:`scalewise.orchestrators.docker_common`
says (only ``TransientError`` is ever retried); "update out of sequence" is a :class:`ConflictError`.

State
-----
- ``desired_replicas``: ``Spec.Mode.Replicated.Replicas``.
- Tasks are listed with ``desired-state=running`` (the ``docker service ps`` equivalent), so tasks
  being shut down by a rolling update are not counted.
- ``running_replicas``: those tasks whose ``Status.State`` is ``starting`` or ``running`` (the
  container is up, maybe not yet healthy).
- ``ready_replicas``: those tasks whose ``Status.State`` is ``running``, minus tasks whose container
  the engine currently reports ``unhealthy``. Swarm only moves a task with a health check from
  ``starting`` to ``running`` after its container reported *healthy* once (the executor waits for
  the ``health_status: healthy`` event before it marks the task running and adds it to the service's
  load-balancer), so ``running`` already means "passed its health check". A container that later
  turns unhealthy is caught by one extra ``containers.list(health=unhealthy)`` call (the engine keeps
  the service-id label on every task container; on a multi-node swarm only local ones are seen, and
  Swarm replaces unhealthy tasks itself anyway).
- ``updated_replicas``: running tasks whose task spec (image, container spec, ForceUpdate) equals
  the service's current ``TaskTemplate``.
- ``replicas`` lists the same tasks (desired-state ``running``, not yet in a terminal state), each as
  ``<service>.<slot>.<task id>``, the name Swarm gives the task's container (so it matches per-replica
  series keyed by container name); ``ready`` as counted above; ``pending`` before ``starting`` (no
  container yet, ``container_id`` None).
- ``updating`` / ``update_state``: from ``UpdateStatus.State`` (``updating``, ``paused``,
  ``completed``, ``rollback_started``, ``rollback_paused``, ``rollback_completed``).

Waiting
-------
``wait_converged`` polls ``read`` (calling ``on_progress`` each time) until desired == ready ==
updated == running tasks and no update is in progress (``converged``), or the bound passes
(``timeout``). ``update_failed``: Swarm paused the update (``failure_action: pause``).
``rolled_back``: this wait saw an update in progress and Swarm's own ``failure_action: rollback``
reverted it (``rollback_completed``, reported once the restored tasks are steady) or the rollback
itself got stuck (``rollback_paused``). A *new* wait that starts after such a rollback already
finished reports ``converged`` (the service is steady on its restored spec; ``state.update_state``
still says ``rollback_completed``), so a caller that waits again after a failed rollout sees the
restored workload as converged.

Revision history
----------------
Swarm itself only keeps ``PreviousSpec``. The adapter keeps its own history in two service labels:
``scalewise.revisions`` (the format of ``history.py``: every entry carries the whole rendered spec of
its revision and its hash, compressed past 2 KiB, newest last, capped at :data:`MAX_REVISIONS`) and
``scalewise.revision`` (the current number). Numbering is ``scalewise.revisions.record_revision``:
any write whose rendered spec differs (image, env, command, ports, health check, update settings)
is a new revision. Labels are part of the service spec, so history and spec change in the same
versioned write, survive adapter restarts and are read by any new adapter instance.
``apply_rollback`` applies the planned revision's whole spec, a new entry (like ``kubectl rollout
undo``). When Swarm's own ``failure_action: rollback`` reverts a failed update, it restores the whole
previous spec, labels included, so the history then no longer lists the failed revision.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import docker

from scalewise.errors import CanaryFailed, ConflictError, NotFoundError, PermanentError
from scalewise.model import CanaryState, ConvergeResult, Revision, WorkloadState
from scalewise.orchestrators.base import ProgressFn
from scalewise.orchestrators.docker_common import (
    DEFAULT_TIMEOUT_S,
    LABEL_CANARY_HASH,
    LABEL_CANARY_TEMPLATE,
    LABEL_CANARY_WEIGHT,
    LABEL_MANAGED,
    LABEL_REVISION,
    LABEL_REVISIONS,
    LABEL_ROLE,
    LABEL_SPEC_HASH,
    LABEL_WORKLOAD,
    ROLE_CANARY,
    map_docker_error,
    poll_converged,
)
from scalewise.orchestrators.docker_common import mapped as _mapped
from scalewise.orchestrators.docker_common import ns as _ns
from scalewise.orchestrators.history import (
    MAX_REVISIONS,
    canary_spec,
    dump_history,
    dump_template,
    parse_history,
    parse_template,
)
from scalewise.orchestrators.promotion import roll_stable_to
from scalewise.policy.canary import canary_replicas
from scalewise.policy.readings import ReplicaInfo
from scalewise.revisions import (
    RollbackPlan,
    record_revision,
    render_template,
    restore,
    spec_revision,
)
from scalewise.revisions import template_hash as revision_hash
from scalewise.spec import UpdateStrategy, WorkloadSpec

_UPDATING_STATES = frozenset({"updating", "rollback_started"})
#: Task states before its container is started, and the terminal ones (a task that will not run again).
_PENDING_TASK_STATES = frozenset({"new", "allocated", "pending", "assigned", "accepted", "preparing", "ready"})
_ENDED_TASK_STATES = frozenset({"complete", "shutdown", "failed", "rejected", "remove", "orphaned"})
_T = TypeVar("_T")
CANARY_SUFFIX = "-canary"


def _update_config(update: UpdateStrategy, rollback: bool) -> dict[str, Any]:
    failure_action = update.failure_action
    if rollback and failure_action == "rollback":
        # A failing rollback cannot itself be rolled back: stop and let a human look.
        failure_action = "pause"
    return {
        "Parallelism": update.parallelism,
        "Delay": _ns(update.delay),
        "FailureAction": failure_action,
        "Monitor": _ns(update.monitor),
        "MaxFailureRatio": update.max_failure_ratio,
        "Order": update.order,
    }


def _parse_history(labels: dict[str, str], image: str) -> list[Revision]:
    # A service scalewise did not create (or whose labels were edited) starts at revision 1.
    return parse_history(labels.get(LABEL_REVISIONS)) or [Revision(number=1, image=image)]


def _current_revision(labels: dict[str, str], history: list[Revision]) -> int:
    try:
        return max(1, int(labels.get(LABEL_REVISION, "")))
    except ValueError:
        return history[-1].number


def canary_service_name(name: str) -> str:
    """The Swarm service that runs workload ``name``'s canary (names are at most 53 characters, so
    this stays within Swarm's 63)."""
    return f"{name}{CANARY_SUFFIX}"


class SwarmOrchestrator:
    """The :class:`~scalewise.orchestrators.base.Orchestrator` for a Docker Swarm (manager node)."""

    target = "swarm"

    def __init__(self, client: docker.DockerClient) -> None:
        self.client = client
        self.api: docker.APIClient = client.api

    @classmethod
    def from_env(cls, timeout_s: float = DEFAULT_TIMEOUT_S) -> SwarmOrchestrator:
        """Configured from DOCKER_HOST / DOCKER_TLS_VERIFY / DOCKER_CERT_PATH, like the docker CLI."""
        with _mapped("connecting to the Docker engine"):
            return cls(docker.from_env(timeout=int(timeout_s)))

    def close(self) -> None:
        self.client.close()

    # ----------------------------------------------------------------------------- reading

    def _what(self, spec: WorkloadSpec, action: str) -> str:
        return f"swarm service {spec.name!r}: {action}"

    def _inspect(self, name: str) -> dict[str, Any]:
        with _mapped(f"swarm service {name!r}: inspect"):
            service: dict[str, Any] = self.api.inspect_service(name)
        return service

    def _call(self, what: str, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        with _mapped(what):
            return fn(*args, **kwargs)

    def exists(self, spec: WorkloadSpec) -> bool:
        try:
            self._inspect(spec.name)
        except NotFoundError:
            return False
        return True

    def read(self, spec: WorkloadSpec) -> WorkloadState:
        return self._state(spec.name, self._inspect(spec.name))

    def _state(self, name: str, service: dict[str, Any]) -> WorkloadState:
        svc_spec = service["Spec"]
        mode = svc_spec.get("Mode") or {}
        if "Replicated" not in mode:
            raise PermanentError(f"swarm service {name!r}: not a replicated service (mode {list(mode)})")
        desired = int((mode["Replicated"] or {}).get("Replicas", 0) or 0)
        template = svc_spec.get("TaskTemplate") or {}
        cspec = template.get("ContainerSpec") or {}
        image = str(cspec.get("Image", "")).split("@", 1)[0]
        labels: dict[str, str] = svc_spec.get("Labels") or {}
        history = _parse_history(labels, image)
        revision = _current_revision(labels, history)

        tasks, unhealthy = self._tasks(name, service)
        running = ready = updated = 0
        for task in tasks:
            status = task.get("Status") or {}
            state = status.get("State")
            if state not in ("starting", "running"):
                continue
            running += 1
            if self._task_ready(task, unhealthy):
                ready += 1
            if self._task_is_current(task, template):
                updated += 1

        update_status = service.get("UpdateStatus") or {}
        update_state = update_status.get("State")
        message = update_status.get("Message") or None
        return WorkloadState(
            name=name,
            target=self.target,
            desired_replicas=desired,
            ready_replicas=ready,
            running_replicas=running,
            updated_replicas=updated,
            image=image,
            revision=revision,
            version=str(service["Version"]["Index"]),
            updating=update_state in _UPDATING_STATES,
            update_state=update_state,
            message=message,
        )

    def _tasks(self, name: str, service: dict[str, Any]) -> tuple[list[dict[str, Any]], set[str]]:
        """The service's tasks that should be running, and the ids of its containers reported unhealthy."""
        what = f"swarm service {name!r}: list tasks"
        tasks: list[dict[str, Any]] = self._call(
            what, self.api.tasks, filters={"service": service["ID"], "desired-state": "running"}
        )
        # A task filter by service accepts name prefixes; keep only this service's tasks.
        tasks = [t for t in tasks if t.get("ServiceID") == service["ID"]]
        unhealthy: set[str] = set()
        if ((service["Spec"].get("TaskTemplate") or {}).get("ContainerSpec") or {}).get("Healthcheck"):
            containers = self._call(
                f"swarm service {name!r}: list unhealthy containers",
                self.api.containers,
                filters={"label": f"com.docker.swarm.service.id={service['ID']}", "health": "unhealthy"},
            )
            unhealthy = {c["Id"] for c in containers}
        return tasks, unhealthy

    @staticmethod
    def _container_id(task: dict[str, Any]) -> str | None:
        found = ((task.get("Status") or {}).get("ContainerStatus") or {}).get("ContainerID")
        return str(found) if found else None

    @classmethod
    def _task_ready(cls, task: dict[str, Any], unhealthy: set[str]) -> bool:
        return (task.get("Status") or {}).get("State") == "running" and cls._container_id(task) not in unhealthy

    def replicas(self, spec: WorkloadSpec) -> list[ReplicaInfo]:
        service = self._inspect(spec.name)
        name = service["Spec"].get("Name") or spec.name
        tasks, unhealthy = self._tasks(spec.name, service)
        listed: list[ReplicaInfo] = []
        for task in tasks:
            state = (task.get("Status") or {}).get("State")
            if state in _ENDED_TASK_STATES:
                continue
            pending = state in _PENDING_TASK_STATES
            listed.append(
                ReplicaInfo(
                    id=f"{name}.{task.get('Slot', 0)}.{task['ID']}",
                    ready=self._task_ready(task, unhealthy),
                    pending=pending,
                    container_id=None if pending else self._container_id(task),
                )
            )
        return sorted(listed, key=lambda r: r.id)

    @staticmethod
    def _task_is_current(task: dict[str, Any], template: dict[str, Any]) -> bool:
        tspec = task.get("Spec") or {}
        if (tspec.get("ForceUpdate") or 0) != (template.get("ForceUpdate") or 0):
            return False
        return bool(tspec.get("ContainerSpec") == template.get("ContainerSpec"))

    def revisions(self, spec: WorkloadSpec) -> list[Revision]:
        service = self._inspect(spec.name)
        svc_spec = service["Spec"]
        image = str(svc_spec["TaskTemplate"]["ContainerSpec"].get("Image", "")).split("@", 1)[0]
        return _parse_history(svc_spec.get("Labels") or {}, image)

    # ----------------------------------------------------------------------------- rendering

    def _render(self, spec: WorkloadSpec) -> dict[str, Any]:
        """The service fields scalewise owns (everything but replicas and revision labels)."""
        cspec: dict[str, Any] = {
            "Image": spec.image,
            "Labels": {LABEL_WORKLOAD: spec.name, LABEL_MANAGED: "true"},
            "StopGracePeriod": _ns(spec.stop_grace_period),
        }
        if spec.command:
            cspec["Command"] = list(spec.command)
        if spec.env:
            cspec["Env"] = [f"{k}={v}" for k, v in sorted(spec.env.items())]
        if spec.healthcheck is not None:
            hc = spec.healthcheck
            cspec["Healthcheck"] = {
                "Test": ["CMD-SHELL", hc.command],
                "Interval": _ns(hc.interval),
                "Timeout": _ns(hc.timeout),
                "Retries": hc.retries,
                "StartPeriod": _ns(hc.start_period),
            }
        endpoint: dict[str, Any] = {"Mode": "vip"}
        if spec.ports:
            ports = []
            for port in spec.ports:
                entry: dict[str, Any] = {
                    "Protocol": port.protocol,
                    "TargetPort": port.container,
                    "PublishMode": "ingress",
                }
                if port.published is not None:
                    entry["PublishedPort"] = port.published
                ports.append(entry)
            endpoint["Ports"] = ports
        return {
            "ContainerSpec": cspec,
            "RestartPolicy": {"Condition": "any", "Delay": _ns(1.0), "MaxAttempts": 0},
            "UpdateConfig": _update_config(spec.update, rollback=False),
            "RollbackConfig": _update_config(spec.update, rollback=True),
            "EndpointSpec": endpoint,
            "Labels": {**spec.labels, LABEL_WORKLOAD: spec.name, LABEL_MANAGED: "true"},
        }

    @staticmethod
    def _hash(rendered: dict[str, Any]) -> str:
        blob = json.dumps(rendered, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    # ----------------------------------------------------------------------------- writing

    def _write(self, name: str, service: dict[str, Any], new_spec: dict[str, Any], version: int) -> None:
        what = f"swarm service {name!r}: update"
        with _mapped(what):
            self.api.update_service(
                service["ID"],
                version=version,
                name=new_spec["Name"],
                labels=new_spec.get("Labels") or {},
                mode=new_spec.get("Mode"),
                task_template=new_spec.get("TaskTemplate"),
                update_config=new_spec.get("UpdateConfig"),
                rollback_config=new_spec.get("RollbackConfig"),
                endpoint_spec=new_spec.get("EndpointSpec"),
            )

    def _checked(self, spec: WorkloadSpec, expected_version: str | None) -> tuple[dict[str, Any], int]:
        service = self._inspect(spec.name)
        index = int(service["Version"]["Index"])
        if expected_version is not None and str(index) != str(expected_version):
            raise ConflictError(
                f"swarm service {spec.name!r}: observed version {expected_version} is stale"
                f" (now {index}); re-read and decide again"
            )
        return service, index

    def _labels_with_revision(
        self, labels: dict[str, str], current_image: str, new_spec: WorkloadSpec
    ) -> tuple[dict[str, str], int]:
        history, number = record_revision(_parse_history(labels, current_image), new_spec, datetime.now(UTC))
        out = dict(labels)
        out[LABEL_REVISIONS] = dump_history(history)
        out[LABEL_REVISION] = str(number)
        return out, number

    def apply(self, spec: WorkloadSpec, replicas: int | None = None) -> WorkloadState:
        if replicas is not None and replicas < 0:
            raise PermanentError(f"swarm service {spec.name!r}: replicas cannot be negative ({replicas})")
        rendered = self._render(spec)
        spec_hash = self._hash(rendered)
        try:
            service = self._inspect(spec.name)
        except NotFoundError:
            return self._create(spec, rendered, spec_hash, replicas)
        svc_spec: dict[str, Any] = json.loads(json.dumps(service["Spec"]))
        labels: dict[str, str] = svc_spec.get("Labels") or {}
        mode = svc_spec.get("Mode") or {}
        if "Replicated" not in mode:
            raise PermanentError(f"swarm service {spec.name!r}: exists but is not a replicated service")
        current_replicas = int((mode["Replicated"] or {}).get("Replicas", 0) or 0)
        want_replicas = current_replicas if replicas is None else replicas
        if labels.get(LABEL_SPEC_HASH) == spec_hash and want_replicas == current_replicas:
            return self._state(spec.name, service)
        template = svc_spec.get("TaskTemplate") or {}
        current_image = str((template.get("ContainerSpec") or {}).get("Image", "")).split("@", 1)[0]
        new_labels = {k: v for k, v in labels.items() if k.startswith("scalewise.")}
        new_labels.update(rendered["Labels"])
        new_labels[LABEL_SPEC_HASH] = spec_hash
        new_labels, _ = self._labels_with_revision(new_labels, current_image, spec)
        new_template = dict(template)
        new_template["ContainerSpec"] = rendered["ContainerSpec"]
        new_template["RestartPolicy"] = rendered["RestartPolicy"]
        svc_spec["TaskTemplate"] = new_template
        svc_spec["Labels"] = new_labels
        svc_spec["Mode"] = {"Replicated": {"Replicas": want_replicas}}
        svc_spec["UpdateConfig"] = rendered["UpdateConfig"]
        svc_spec["RollbackConfig"] = rendered["RollbackConfig"]
        svc_spec["EndpointSpec"] = rendered["EndpointSpec"]
        self._write(spec.name, service, svc_spec, int(service["Version"]["Index"]))
        return self.read(spec)

    def _create(
        self, spec: WorkloadSpec, rendered: dict[str, Any], spec_hash: str, replicas: int | None
    ) -> WorkloadState:
        count = spec.replicas.start if replicas is None else replicas
        history = [spec_revision(spec, 1, datetime.now(UTC))]
        labels = {
            **rendered["Labels"],
            LABEL_SPEC_HASH: spec_hash,
            LABEL_REVISIONS: dump_history(history),
            LABEL_REVISION: "1",
        }
        template = {"ContainerSpec": rendered["ContainerSpec"], "RestartPolicy": rendered["RestartPolicy"]}
        with _mapped(self._what(spec, "create")):
            self.api.create_service(
                template,
                name=spec.name,
                labels=labels,
                mode={"Replicated": {"Replicas": count}},
                update_config=rendered["UpdateConfig"],
                rollback_config=rendered["RollbackConfig"],
                endpoint_spec=rendered["EndpointSpec"],
            )
        return self.read(spec)

    def set_replicas(self, spec: WorkloadSpec, replicas: int, expected_version: str) -> WorkloadState:
        if replicas < 0:
            raise PermanentError(f"swarm service {spec.name!r}: replicas cannot be negative ({replicas})")
        service, index = self._checked(spec, expected_version)
        svc_spec: dict[str, Any] = json.loads(json.dumps(service["Spec"]))
        if "Replicated" not in (svc_spec.get("Mode") or {}):
            raise PermanentError(f"swarm service {spec.name!r}: not a replicated service, cannot scale")
        svc_spec["Mode"] = {"Replicated": {"Replicas": replicas}}
        self._write(spec.name, service, svc_spec, index)
        return self.read(spec)

    def _set_image(
        self, spec: WorkloadSpec, service: dict[str, Any], index: int, image: str
    ) -> WorkloadState:
        svc_spec: dict[str, Any] = json.loads(json.dumps(service["Spec"]))
        template = svc_spec.setdefault("TaskTemplate", {})
        cspec = template.setdefault("ContainerSpec", {})
        current_image = str(cspec.get("Image", "")).split("@", 1)[0]
        labels: dict[str, str] = svc_spec.get("Labels") or {}
        # The service keeps everything but the image: record the current revision's spec with it.
        history = _parse_history(labels, current_image)
        current = next((r for r in history if r.number == _current_revision(labels, history)), history[-1])
        running = restore(spec, current) if current.template is not None else spec
        new_labels, _ = self._labels_with_revision(labels, current_image, running.with_image(image))
        if LABEL_SPEC_HASH in new_labels:
            # The owned spec now differs from the last applied one: a later apply must write.
            new_labels[LABEL_SPEC_HASH] = "image-" + hashlib.sha256(image.encode()).hexdigest()[:8]
        cspec["Image"] = image
        svc_spec["Labels"] = new_labels
        self._write(spec.name, service, svc_spec, index)
        return self.read(spec)

    def update_image(self, spec: WorkloadSpec, image: str, expected_version: str) -> WorkloadState:
        try:
            spec.with_image(image)
        except ValueError as exc:
            raise PermanentError(f"swarm service {spec.name!r}: bad image {image!r}: {exc}") from None
        service, index = self._checked(spec, expected_version)
        current = str(service["Spec"]["TaskTemplate"]["ContainerSpec"].get("Image", "")).split("@", 1)[0]
        if current == image:
            return self._state(spec.name, service)
        return self._set_image(spec, service, index, image)

    def apply_rollback(self, spec: WorkloadSpec, plan: RollbackPlan) -> WorkloadState:
        """Apply the plan's target revision's whole spec (a new revision; replicas stay)."""
        return self.apply(restore(spec, plan.target))

    def remove(self, spec: WorkloadSpec) -> None:
        self._remove_canary(spec)
        try:
            with _mapped(self._what(spec, "remove")):
                self.api.remove_service(spec.name)
        except NotFoundError:
            return

    # ----------------------------------------------------------------------------- canary

    def _canary_service(self, spec: WorkloadSpec) -> dict[str, Any] | None:
        """The canary service of ``spec`` (``None`` without one, or when that name is another
        service: one not labelled as this workload's canary is never read, written or removed)."""
        try:
            service = self._inspect(canary_service_name(spec.name))
        except NotFoundError:
            return None
        labels: dict[str, str] = service["Spec"].get("Labels") or {}
        if labels.get(LABEL_ROLE) != ROLE_CANARY or labels.get(LABEL_WORKLOAD) != spec.name:
            return None
        return service

    def _canary_state(self, spec: WorkloadSpec, service: dict[str, Any]) -> CanaryState:
        labels: dict[str, str] = service["Spec"].get("Labels") or {}
        state = self._state(canary_service_name(spec.name), service)
        try:
            weight = min(100, max(0, int(labels.get(LABEL_CANARY_WEIGHT, "0"))))
        except ValueError:
            weight = 0
        return CanaryState(
            name=spec.name,
            image=state.image,
            weight=weight,
            desired_replicas=state.desired_replicas,
            ready_replicas=state.ready_replicas,
            spec_hash=labels.get(LABEL_CANARY_HASH) or None,
            template=parse_template(labels.get(LABEL_CANARY_TEMPLATE)),
        )

    def read_canary(self, spec: WorkloadSpec) -> CanaryState | None:
        service = self._canary_service(spec)
        return None if service is None else self._canary_state(spec, service)

    def _render_canary(
        self, spec: WorkloadSpec, stable: dict[str, Any], canary: WorkloadSpec, weight: int, replicas: int
    ) -> dict[str, Any]:
        """The canary service: ``canary`` rendered as the stable would be, on the stable's networks with
        the stable's name as alias, with its placement and resources, no published ports, marked canary."""
        rendered = self._render(canary)
        stable_spec = stable["Spec"]
        stable_template = stable_spec.get("TaskTemplate") or {}
        template: dict[str, Any] = json.loads(json.dumps(stable_template))
        template.pop("ForceUpdate", None)
        cspec = dict(rendered["ContainerSpec"])
        cspec["Labels"] = {**cspec["Labels"], LABEL_ROLE: ROLE_CANARY}
        template["ContainerSpec"] = cspec
        template["RestartPolicy"] = rendered["RestartPolicy"]
        networks = stable_template.get("Networks") or stable_spec.get("Networks") or []
        template["Networks"] = [
            {**net, "Aliases": sorted({*(net.get("Aliases") or []), spec.name})} for net in networks
        ]
        if not template["Networks"]:
            template.pop("Networks")
        shape = render_template(canary)
        labels = {
            **rendered["Labels"],
            LABEL_ROLE: ROLE_CANARY,
            LABEL_CANARY_WEIGHT: str(weight),
            LABEL_CANARY_HASH: revision_hash(shape),
            LABEL_CANARY_TEMPLATE: dump_template(shape),
        }
        return {
            "Name": canary_service_name(spec.name),
            "Labels": labels,
            "TaskTemplate": template,
            "Mode": {"Replicated": {"Replicas": replicas}},
            "UpdateConfig": rendered["UpdateConfig"],
            "RollbackConfig": rendered["RollbackConfig"],
            # Published ports stay the stable's (one ingress port belongs to one service); the
            # canary is reached through the shared alias.
            "EndpointSpec": {"Mode": (stable_spec.get("EndpointSpec") or {}).get("Mode") or "vip"},
        }

    def set_canary(self, spec: WorkloadSpec, canary: WorkloadSpec, weight: int) -> CanaryState:
        if not 0 <= weight <= 100:
            raise PermanentError(f"swarm service {spec.name!r}: weight {weight} is outside [0, 100]")
        if canary.name != spec.name:
            raise PermanentError(
                f"swarm service {spec.name!r}: canary.name {canary.name!r} must be the stable's name"
            )
        stable = self._inspect(spec.name)
        want = canary_replicas(weight, self._state(spec.name, stable).desired_replicas)
        name = canary_service_name(spec.name)
        service = self._canary_service(spec)
        if service is None:
            if self.exists(spec.model_copy(update={"name": name})):
                raise PermanentError(
                    f"swarm service {spec.name!r}: service {name!r} exists and is not its canary;"
                    " rename one of them"
                )
            new = self._render_canary(spec, stable, canary, weight, want)
            with _mapped(f"swarm service {name!r}: create canary"):
                self.api.create_service(
                    new["TaskTemplate"],
                    name=name,
                    labels=new["Labels"],
                    mode=new["Mode"],
                    update_config=new["UpdateConfig"],
                    rollback_config=new["RollbackConfig"],
                    endpoint_spec=new["EndpointSpec"],
                )
        else:
            labels: dict[str, str] = service["Spec"].get("Labels") or {}
            if labels.get(LABEL_CANARY_HASH) != revision_hash(render_template(canary)):
                running = self._canary_state(spec, service).image
                raise PermanentError(
                    f"swarm service {spec.name!r}: a canary of {running} is running; promote or abort it first"
                )
            svc_spec: dict[str, Any] = json.loads(json.dumps(service["Spec"]))
            current = int(((svc_spec.get("Mode") or {}).get("Replicated") or {}).get("Replicas", 0) or 0)
            if current != want or labels.get(LABEL_CANARY_WEIGHT) != str(weight):
                svc_spec["Mode"] = {"Replicated": {"Replicas": want}}
                svc_spec["Labels"] = {**labels, LABEL_CANARY_WEIGHT: str(weight)}
                self._write(name, service, svc_spec, int(service["Version"]["Index"]))
        return self._await_canary(spec, canary)

    def _await_canary(self, spec: WorkloadSpec, canary: WorkloadSpec) -> CanaryState:
        """Wait (``update.timeout``) until every canary replica runs and is ready; CanaryFailed if not."""
        name = canary_service_name(spec.name)

        def settled(state: WorkloadState, elapsed: float) -> ConvergeResult | None:
            if state.desired_replicas == state.ready_replicas == state.running_replicas:
                return ConvergeResult(converged=True, state=state, reason="converged", elapsed_s=elapsed)
            return None

        result = poll_converged(
            lambda: self._state(name, self._inspect(name)),
            settled,
            start=time.monotonic(),
            timeout_s=canary.update.timeout,
            poll_s=0.5,
            on_progress=None,
            progress=lambda s: f"{s.ready_replicas} of {s.desired_replicas} canary replicas ready",
            what=f"swarm service {name!r}",
        )
        if not result.converged:
            raise CanaryFailed(spec.name, f"{canary.image}: {result.detail}{self._last_task_error(name)}")
        service = self._canary_service(spec)
        if service is None:  # removed under us (an abort): say so rather than report a canary
            raise PermanentError(f"swarm service {spec.name!r}: the canary service {name!r} disappeared")
        return self._canary_state(spec, service)

    def _last_task_error(self, name: str) -> str:
        """``; last task error: ...`` from the newest task of service ``name`` that reported one."""
        try:
            tasks: list[dict[str, Any]] = self._call(
                f"swarm service {name!r}: list tasks", self.api.tasks, filters={"service": name}
            )
        except PermanentError:
            return ""
        failed = [t for t in tasks if (t.get("Status") or {}).get("Err")]
        if not failed:
            return ""
        newest = max(failed, key=lambda t: str((t.get("Status") or {}).get("Timestamp", "")))
        return f"; last task error: {newest['Status']['Err']}"

    def promote_canary(self, spec: WorkloadSpec) -> WorkloadState:
        found = self.read_canary(spec)
        if found is None:
            raise PermanentError(f"swarm service {spec.name!r}: no canary to promote")
        if found.template is None:
            raise PermanentError(f"swarm service {spec.name!r}: the canary service carries no spec; abort it")
        roll_stable_to(self, spec, canary_spec(spec, found))  # the rolling update, undone on failure
        self._remove_canary(spec)
        return self.read(spec)

    def _remove_canary(self, spec: WorkloadSpec) -> None:
        """Remove the canary service (none: nothing to do), then wait a little for its local task
        containers to go (best effort: Swarm stops them on its own)."""
        service = self._canary_service(spec)
        if service is None:
            return
        name = canary_service_name(spec.name)
        try:
            with _mapped(f"swarm service {name!r}: remove canary"):
                self.api.remove_service(service["ID"])
        except NotFoundError:
            return
        deadline = time.monotonic() + min(spec.stop_grace_period, 10.0) + 15.0
        while time.monotonic() < deadline:
            left = self._call(
                f"swarm service {name!r}: list canary containers",
                self.api.containers,
                filters={"label": f"com.docker.swarm.service.id={service['ID']}"},
            )
            if not left:
                return
            time.sleep(0.5)

    def abort_canary(self, spec: WorkloadSpec) -> WorkloadState:
        self._remove_canary(spec)
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
        deadline = start + max(0.0, timeout_s)
        saw_rollout = False

        def settled(state: WorkloadState, elapsed: float) -> ConvergeResult | None:
            nonlocal saw_rollout
            steady = (
                state.desired_replicas == state.ready_replicas == state.updated_replicas
                and state.running_replicas == state.desired_replicas
            )
            if state.update_state in _UPDATING_STATES:
                saw_rollout = True
            if state.update_state == "rollback_completed" and not saw_rollout and steady:
                # Swarm reverted an earlier update before this wait began; UpdateStatus stays
                # "rollback_completed" until the next write. The service is steady on its
                # (restored) spec, so this wait has converged; update_state still tells.
                return ConvergeResult(
                    converged=True,
                    state=state,
                    reason="converged",
                    detail="steady on the spec Swarm restored after an earlier failed update",
                    elapsed_s=elapsed,
                )
            if state.update_state in ("rollback_completed", "rollback_paused"):
                if steady or state.update_state == "rollback_paused" or time.monotonic() >= deadline:
                    return ConvergeResult(
                        converged=False,
                        state=state,
                        reason="rolled_back",
                        detail=state.message or f"Swarm update state {state.update_state}",
                        elapsed_s=elapsed,
                    )
            elif state.update_state == "paused":
                return ConvergeResult(
                    converged=False,
                    state=state,
                    reason="update_failed",
                    detail=state.message or "Swarm paused the update",
                    elapsed_s=elapsed,
                )
            elif steady and not state.updating:
                return ConvergeResult(converged=True, state=state, reason="converged", elapsed_s=elapsed)
            return None

        return poll_converged(
            lambda: self.read(spec),
            settled,
            start=start,
            timeout_s=timeout_s,
            poll_s=poll_s,
            on_progress=on_progress,
            progress=lambda state: (
                f"desired {state.desired_replicas}, ready {state.ready_replicas},"
                f" updated {state.updated_replicas} (update state {state.update_state})"
            ),
        )

__all__ = ["CANARY_SUFFIX", "MAX_REVISIONS", "SwarmOrchestrator", "canary_service_name", "map_docker_error"]
