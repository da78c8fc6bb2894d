"""Kubernetes adapter: one workload is one Deployment (or StatefulSet) of the same name in
``spec.kubernetes.namespace``.

Only this module imports the ``kubernetes`` SDK. Every call goes through the typed API classes with
``_preload_content=False`` and the JSON is read as plain dicts (the server's own field names).

Writes
------
- ``apply``: **server-side apply** (field manager ``scalewise``) of a manifest rendered from the spec
  (labels ``app.kubernetes.io/name`` / ``app.kubernetes.io/managed-by=scalewise``, selector, one
  container ``main`` with image/command/env/ports, a readiness probe ``sh -c <healthcheck>``,
  RollingUpdate with maxSurge/maxUnavailable, progressDeadlineSeconds, revisionHistoryLimit).
  ``force=True``: the applied configuration holds *only* fields rendered from the spec, so forcing
  only re-acquires those fields — the spec file is their source of truth (GitOps), and the same
  manager's earlier non-apply patches (``update_image``) would otherwise conflict with its own
  apply. Fields we do not render (other managers' labels, annotations, sidecars added by webhooks,
  ...) are never in the applied config and are left alone. ``spec.replicas`` is always applied with
  the value read just before (or the one asked for), and the apply carries the observed
  ``metadata.resourceVersion`` as a precondition, so a concurrent scale by someone else is never
  reverted: the apply gets 409, re-reads and re-renders (bounded).
  StatefulSets get a headless Service of the same name (applied the same way) as ``serviceName``.
- ``set_replicas``: a merge patch of the **scale subresource** carrying the ``resourceVersion`` read
  just before. The ``version`` token of :class:`WorkloadState` is the object's ``metadata.generation``:
  the apiserver moves it on every change of the spec (replicas, pod template) and never for status.
  The resourceVersion also moves with every status update the controllers write (each pod that starts),
  so as a token it made a decision stale without anyone having changed what it was based on: under load
  five re-decisions in a row could all lose to status updates (seen in CI). A token whose generation
  moved raises :class:`ConflictError` before writing; a write that gets HTTP 409 is re-read, and sent
  again with the new resourceVersion only if the generation is still the observed one (a status-only
  change, at most ``STATUS_RACE_ATTEMPTS`` times); otherwise :class:`ConflictError`, never retried
  blindly.
- ``update_image``: a strategic merge patch of the container image, versioned the same way.
- Revisions: the pod template carries ``scalewise.io/spec``, the whole rendered spec of that
  revision (``scalewise.revisions.render_template``), so every ReplicaSet keeps its revision's spec;
  ``revisions`` reads it back from the ReplicaSets (numbered by the deployment controller's
  ``deployment.kubernetes.io/revision`` and ``revision-history``). StatefulSets: the StatefulSet
  controller renumbers reused ControllerRevisions and keeps no history of old numbers, so the
  adapter keeps its own history (whole specs, numbered by ``record_revision``) in two annotations
  (``scalewise.io/revisions``, ``scalewise.io/revision``), written in the same versioned write.
- ``apply_rollback`` executes a plan from ``plan_rollback``: it applies the planned revision's whole
  spec (the versioned server-side apply above, re-rendered on 409). For a Deployment the controller
  reuses that revision's ReplicaSet and numbers it anew, like ``kubectl rollout undo``.
- ``remove``: delete with ``propagationPolicy=Background`` (the object is gone at once; the garbage
  collector removes ReplicaSets/Pods) plus the headless Service; idempotent.

Canary
------
A canary is a second Deployment ``<name>-canary`` rendered by ``_render`` from the canary's spec. Its
pods carry the stable's pod labels (a Service selecting ``app.kubernetes.io/name`` balances over both
by pod count) plus ``scalewise.io/role=canary``, which its own selector requires. The stable's selector
(``app.kubernetes.io/name`` only) is immutable, so it also matches canary pods; that is harmless for
the controllers (the canary pods have another ``pod-template-hash`` and the canary's ReplicaSet as
controller owner, so the stable's ReplicaSets never adopt or count them, and the Deployment's status
counts only its own ReplicaSets) and ``replicas`` excludes the role label. Weight and the canary
spec's hash are annotations of the canary Deployment. StatefulSets refuse a canary.

Refusing to fight another owner
-------------------------------
Before changing the replica count (``set_replicas``, ``apply`` with an explicit count that differs)
the adapter lists the namespace's ``autoscaling/v2`` HorizontalPodAutoscalers; one whose
``scaleTargetRef`` names this workload (this also catches KEDA, which scales through an HPA
``keda-hpa-<name>`` labelled ``scaledobject.keda.sh/name``) raises :class:`OwnershipError` naming it,
unless ``kubernetes.allow_foreign_scaler`` is set.

Error mapping (kopf-style; only ``TransientError`` is ever retried)
-------------------------------------------------------------------
==========================================================  =====================================
What the SDK raised                                         What the adapter raises
==========================================================  =====================================
urllib3 ``HTTPError`` (MaxRetryError, NewConnectionError,   UnreachableError (a TransientError
ProtocolError, Read/ConnectTimeoutError), ``OSError``       naming the apiserver address and
(connection refused/reset, SSL EOF during a restart)        KUBECONFIG)
``ApiException`` without a status (no HTTP answer)          UnreachableError
``ApiException`` 5xx, 429 (throttled), 410 (Gone)           TransientError
``ApiException`` 404                                        NotFoundError
``ApiException`` 409 (stale resourceVersion, exists)        ConflictError
``ApiException`` 403                                       ForbiddenError: "forbidden: cannot
                                                            <verb> <resource> in namespace <ns>"
                                                            (the verb the authorizer denied)
``ApiException`` 401 (token rejected/expired)               ForbiddenError: "unauthorized: ..."
``ApiException`` 400 / 422 / other 4xx                      PermanentError (server's message)
==========================================================  =====================================

State
-----
- ``desired_replicas`` = ``spec.replicas``; ``ready_replicas`` = ``status.readyReplicas``;
  ``updated_replicas`` = ``status.updatedReplicas``; ``running_replicas`` = ``status.replicas``.
- ``image``: the first container's image.
- ``replicas``: the pods matching the object's ``spec.selector`` (as the HPA lists them), without
  pods being deleted or finished (``Succeeded``/``Failed``); id = pod name, ``ready`` from the pod's
  ``Ready`` condition, ``pending`` for phase ``Pending`` (not scheduled or not started).
- ``revision`` (Deployment): the ``deployment.kubernetes.io/revision`` annotation. Right after a
  write, before the deployment controller observed it (``observedGeneration < generation``), the
  revision is computed the controller's way from the ReplicaSets: the ReplicaSet whose template
  equals the Deployment's (ignoring ``pod-template-hash``) keeps its number if it is the newest,
  else the rollout gets ``max + 1``. So ``update_image`` returns the bumped revision at once.
  StatefulSet: ``scalewise.io/revision``.
- ``updating`` / ``update_state`` follow ``kubectl rollout status``: ``waiting`` (observedGeneration
  < generation), ``deadline_exceeded`` (Progressing condition reason ProgressDeadlineExceeded, not
  updating any more), ``progressing`` (updatedReplicas < replicas, old replicas pending
  termination, or updated replicas not yet available; StatefulSet: updateRevision != currentRevision
  or replicas not ready), ``complete``.

Waiting
-------
``wait_converged`` polls ``read`` until the rollout is ``complete`` with ready == desired
(``converged``), the controller reports ProgressDeadlineExceeded (``deadline_exceeded``), or the
bound passes (``timeout``, with the last error if the last read failed). Transient errors (an
apiserver restart) are absorbed until the bound; if no read succeeded at all the wait raises
:class:`ConvergenceTimeout` (never transient: a wait is bounded by its own limit, not retried).
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import urllib3.exceptions
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from scalewise.errors import (
    CanaryFailed,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    OwnershipError,
    PermanentError,
    TransientError,
    UnreachableError,
)
from scalewise.model import CanaryState, ConvergeResult, Revision, WorkloadState
from scalewise.orchestrators.base import ProgressFn
from scalewise.orchestrators.history import (
    canary_spec,
    dump_history,
    dump_template,
    parse_history,
    parse_template,
)
from scalewise.orchestrators.promotion import roll_stable_to
from scalewise.orchestrators.waiting import poll_converged
from scalewise.policy.canary import canary_replicas
from scalewise.policy.readings import ReplicaInfo
from scalewise.revisions import RollbackPlan, record_revision, render_template, restore, spec_revision, template_hash
from scalewise.spec import WorkloadSpec

FIELD_MANAGER = "scalewise"
CONTAINER = "main"
LABEL_NAME = "app.kubernetes.io/name"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_HASH = "pod-template-hash"
ANN_REVISION = "deployment.kubernetes.io/revision"
ANN_REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
ANN_SW_REVISION = "scalewise.io/revision"
ANN_SW_REVISIONS = "scalewise.io/revisions"
#: On the pod template (so every ReplicaSet keeps it): the whole spec of that revision.
ANN_SW_SPEC = "scalewise.io/spec"
KEDA_LABEL = "scaledobject.keda.sh/name"
#: On a canary Deployment and its pods: marks them so the stable's reads never count them.
LABEL_ROLE = "scalewise.io/role"
ROLE_CANARY = "canary"
#: On a canary Deployment: its weight (percent of the stable's desired replicas) and its spec's hash.
ANN_CANARY_WEIGHT = "scalewise.io/canary-weight"
ANN_CANARY_HASH = "scalewise.io/canary-hash"
CANARY_SUFFIX = "-canary"
REVISION_HISTORY_LIMIT = 10
DEFAULT_TIMEOUT_S = 30.0
APPLY_ATTEMPTS = 3
STATUS_RACE_ATTEMPTS = 5  # 409s caused by status-only updates before a versioned write gives up

_UPDATING_STATES = frozenset({"waiting", "progressing"})
_DENIED_RE = re.compile(r'cannot (\S+) resource "([^"]+)"(?: in API group "[^"]*")?(?: in the namespace "([^"]+)")?')


# --------------------------------------------------------------------------- error mapping


def _server_message(exc: ApiException) -> str:
    body = exc.body
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str) and body:
        try:
            data = json.loads(body)
        except ValueError:
            return body.strip()[:500]
        if isinstance(data, dict) and data.get("message"):
            return str(data["message"])
    return str(exc.reason or "no message")


def unreachable(what: str, server: str, detail: str) -> UnreachableError:
    """The apiserver did not answer: name it, the kubeconfig it came from and what to do."""
    config = os.environ.get("KUBECONFIG") or "~/.kube/config"
    return UnreachableError(
        "Kubernetes apiserver", server or "(unknown address)",
        f"start the cluster, or set KUBECONFIG (now {config}) to one that is running", detail=detail, what=what,
    )


def map_api_error(
    exc: BaseException, verb: str, resource: str, namespace: str, name: str = "", server: str = ""
) -> Exception:
    """Translate an SDK/transport exception into the scalewise taxonomy (see the module table)."""
    obj = f"{resource} {namespace}/{name}" if name else f"{resource} in namespace {namespace}"
    what = f"kubernetes {obj}: {verb}"
    if isinstance(exc, ApiException):
        status = int(exc.status or 0)
        message = _server_message(exc)
        if status == 0:
            return unreachable(what, server, message)
        if status >= 500 or status in (429, 410):
            return TransientError(f"{what}: apiserver answered {status}: {message}")
        if status == 404:
            return NotFoundError(f"{what}: not found: {message}")
        if status == 409:
            return ConflictError(f"{what}: conflict (changed since it was read): {message}")
        if status in (401, 403):
            # Name what the authorizer actually denied: a server-side apply that creates the object is
            # a "patch" request checked for "create" too.
            denied = _DENIED_RE.search(message)
            if denied:
                verb, resource = denied.group(1), denied.group(2)
                namespace = denied.group(3) or namespace
            if status == 401:
                return ForbiddenError(
                    f"unauthorized: the apiserver rejected the credentials; cannot {verb} {resource}"
                    f" in namespace {namespace} ({message})"
                )
            return ForbiddenError(f"forbidden: cannot {verb} {resource} in namespace {namespace} ({status}: {message})")
        return PermanentError(f"{what}: refused ({status}): {message}")
    if isinstance(exc, urllib3.exceptions.HTTPError | OSError):
        return unreachable(what, server, f"{type(exc).__name__}: {exc}")
    return PermanentError(f"{what}: {type(exc).__name__}: {exc}")


@contextmanager
def _mapped(verb: str, resource: str, namespace: str, name: str = "", server: str = "") -> Iterator[None]:
    try:
        yield
    except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
        raise map_api_error(exc, verb, resource, namespace, name, server) from exc


# --------------------------------------------------------------------------- helpers


def _get(obj: Any, *path: str, default: Any = None) -> Any:
    for key in path:
        if not isinstance(obj, dict) or key not in obj or obj[key] is None:
            return default
        obj = obj[key]
    return obj


def _int(value: Any, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _spec_version(obj: dict[str, Any]) -> str:
    """The version token: ``metadata.generation`` (spec changes only, never status updates)."""
    return str(_get(obj, "metadata", "generation", default=""))


def _seconds(value: float, minimum: int = 0) -> int:
    return max(minimum, math.ceil(value))


def _first_image(template: dict[str, Any]) -> str:
    containers = _get(template, "spec", "containers", default=[]) or [{}]
    return str(containers[0].get("image", ""))


def label_selector(selector: dict[str, Any]) -> str:
    """A ``LabelSelector`` object as the ``labelSelector`` query string (``a=b,c in (d,e),!f``)."""
    terms = [f"{key}={value}" for key, value in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op in ("In", "NotIn"):
            terms.append(f"{key} {'in' if op == 'In' else 'notin'} ({','.join(values)})")
        elif op == "Exists":
            terms.append(str(key))
        elif op == "DoesNotExist":
            terms.append(f"!{key}")
        else:
            raise PermanentError(f"kubernetes: unknown label selector operator {op!r} for key {key!r}")
    return ",".join(terms)


def pod_replica(pod: dict[str, Any]) -> ReplicaInfo | None:
    """A pod as a replica, or None when it is being deleted or has finished."""
    phase = _get(pod, "status", "phase", default="Pending")
    if _get(pod, "metadata", "deletionTimestamp") or phase in ("Succeeded", "Failed"):
        return None
    conditions = _get(pod, "status", "conditions", default=[]) or []
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
    return ReplicaInfo(id=str(_get(pod, "metadata", "name")), ready=ready, pending=phase == "Pending")


def _strip_hash(template: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(json.dumps(template))
    labels = _get(out, "metadata", "labels")
    if isinstance(labels, dict):
        labels.pop(LABEL_HASH, None)
    return out


def merge_patch(current: Any, target: Any) -> Any:
    """The RFC 7386 JSON merge patch turning ``current`` into ``target`` (lists are replaced)."""
    if not isinstance(current, dict) or not isinstance(target, dict):
        return target
    patch: dict[str, Any] = {}
    for key in current:
        if key not in target:
            patch[key] = None
    for key, value in target.items():
        if key not in current:
            patch[key] = value
        elif current[key] != value:
            patch[key] = merge_patch(current[key], value)
    return patch


def _parse_history(annotations: dict[str, str], image: str) -> list[Revision]:
    return parse_history(annotations.get(ANN_SW_REVISIONS)) or [Revision(number=1, image=image)]


def _dump_history(history: list[Revision]) -> str:
    return dump_history(history)


def canary_name(name: str) -> str:
    """The canary Deployment of workload ``name``."""
    return f"{name}{CANARY_SUFFIX}"


class KubernetesOrchestrator:
    """The :class:`~scalewise.orchestrators.base.Orchestrator` for a Kubernetes cluster."""

    target = "kubernetes"

    def __init__(self, api_client: k8s.ApiClient, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.api_client = api_client
        self.apps = k8s.AppsV1Api(api_client)
        self.core = k8s.CoreV1Api(api_client)
        self.autoscaling = k8s.AutoscalingV2Api(api_client)
        self.timeout: tuple[float, float] = (min(5.0, timeout_s), timeout_s)

    # ----------------------------------------------------------------------------- construction

    @classmethod
    def from_kubeconfig(
        cls, path: str | Path, context: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S
    ) -> KubernetesOrchestrator:
        configuration = k8s.Configuration()
        try:
            k8s_config.load_kube_config(
                config_file=str(path), context=context, client_configuration=configuration, persist_config=False
            )
        except (ConfigException, OSError, ValueError) as exc:
            raise PermanentError(f"kubernetes: cannot load kubeconfig {path}: {exc}") from None
        return cls._with(configuration, timeout_s)

    @classmethod
    def in_cluster(cls, timeout_s: float = DEFAULT_TIMEOUT_S) -> KubernetesOrchestrator:
        configuration = k8s.Configuration()
        try:
            k8s_config.load_incluster_config(client_configuration=configuration)
        except ConfigException as exc:
            raise PermanentError(f"kubernetes: in-cluster configuration unavailable: {exc}") from None
        return cls._with(configuration, timeout_s)

    @classmethod
    def from_env(cls, timeout_s: float = DEFAULT_TIMEOUT_S) -> KubernetesOrchestrator:
        """Like kubectl: ``KUBECONFIG`` (read now, not at import), else ``~/.kube/config``, else the
        pod's service account (in-cluster)."""
        path = os.environ.get("KUBECONFIG")
        if path:
            return cls.from_kubeconfig(path, timeout_s=timeout_s)
        default = Path("~/.kube/config").expanduser()
        if default.is_file():
            return cls.from_kubeconfig(default, timeout_s=timeout_s)
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            return cls.in_cluster(timeout_s=timeout_s)
        raise PermanentError(
            "kubernetes: no configuration found (set KUBECONFIG, create ~/.kube/config or run in a pod)"
        )

    @classmethod
    def _with(cls, configuration: k8s.Configuration, timeout_s: float) -> KubernetesOrchestrator:
        configuration.connection_pool_maxsize = 32
        return cls(k8s.ApiClient(configuration), timeout_s=timeout_s)

    def close(self) -> None:
        self.api_client.close()

    # ----------------------------------------------------------------------------- raw calls

    def _call(
        self, verb: str, resource: str, namespace: str, name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> dict[str, Any]:
        with _mapped(verb, resource, namespace, name, str(self.api_client.configuration.host or "")):
            resp = fn(*args, _preload_content=False, _request_timeout=self.timeout, **kwargs)
            data = resp.data
        if not data:
            return {}
        try:
            result: dict[str, Any] = json.loads(data)
        except ValueError as exc:
            raise TransientError(f"kubernetes {resource} {namespace}/{name}: {verb}: bad answer: {exc}") from None
        return result

    @staticmethod
    def _kind(spec: WorkloadSpec) -> str:
        return spec.kubernetes.kind

    @staticmethod
    def _plural(spec: WorkloadSpec) -> str:
        return "deployments" if spec.kubernetes.kind == "Deployment" else "statefulsets"

    def _apps_call(self, spec: WorkloadSpec, verb: str, suffix: str = "") -> Callable[..., Any]:
        """The AppsV1Api method for the workload's kind: ``<verb>_namespaced_<deployment|stateful_set><suffix>``."""
        kind = "deployment" if spec.kubernetes.kind == "Deployment" else "stateful_set"
        fn: Callable[..., Any] = getattr(self.apps, f"{verb}_namespaced_{kind}{suffix}")
        return fn

    def _fetch(self, spec: WorkloadSpec) -> dict[str, Any]:
        ns = spec.kubernetes.namespace
        return self._call("get", self._plural(spec), ns, spec.name, self._apps_call(spec, "read"), spec.name, ns)

    def _replica_sets(self, spec: WorkloadSpec, obj: dict[str, Any]) -> list[dict[str, Any]]:
        """The ReplicaSets this Deployment owns (by label, then by owner UID)."""
        ns = spec.kubernetes.namespace
        data = self._call(
            "list", "replicasets", ns, "", self.apps.list_namespaced_replica_set, ns,
            label_selector=f"{LABEL_NAME}={spec.name}",
        )
        uid = _get(obj, "metadata", "uid")
        items: list[dict[str, Any]] = data.get("items") or []
        return [
            rs for rs in items
            if any(ref.get("uid") == uid for ref in (_get(rs, "metadata", "ownerReferences", default=[]) or []))
        ]

    # ----------------------------------------------------------------------------- reading

    def exists(self, spec: WorkloadSpec) -> bool:
        try:
            self._fetch(spec)
        except NotFoundError:
            return False
        return True

    def read(self, spec: WorkloadSpec) -> WorkloadState:
        return self._state(spec, self._fetch(spec))

    def _state(self, spec: WorkloadSpec, obj: dict[str, Any]) -> WorkloadState:
        meta = obj.get("metadata") or {}
        ospec = obj.get("spec") or {}
        status = obj.get("status") or {}
        generation = _int(meta.get("generation"))
        observed = _int(status.get("observedGeneration"))
        desired = _int(ospec.get("replicas"), 1)
        replicas = _int(status.get("replicas"))
        ready = _int(status.get("readyReplicas"))
        updated = _int(status.get("updatedReplicas"))
        template = ospec.get("template") or {}
        image = _first_image(template)
        annotations: dict[str, str] = meta.get("annotations") or {}
        message: str | None = None
        if spec.kubernetes.kind == "Deployment":
            available = _int(status.get("availableReplicas"))
            progressing = next(
                (c for c in status.get("conditions") or [] if c.get("type") == "Progressing"), None
            )
            if observed < generation:
                update_state, message = "waiting", "waiting for the deployment spec update to be observed"
            elif progressing is not None and progressing.get("reason") == "ProgressDeadlineExceeded":
                update_state = "deadline_exceeded"
                message = str(progressing.get("message") or "progress deadline exceeded")
            elif updated < desired:
                update_state, message = "progressing", f"{updated} of {desired} new replicas updated"
            elif replicas > updated:
                update_state, message = "progressing", f"{replicas - updated} old replicas pending termination"
            elif available < updated:
                update_state, message = "progressing", f"{available} of {updated} updated replicas available"
            else:
                update_state = "complete"
            revision = _int(annotations.get(ANN_REVISION))
            if observed < generation or revision < 1:
                revision, _ = self._deployment_history(spec, obj)
        else:
            current_rev = status.get("currentRevision")
            update_rev = status.get("updateRevision")
            if observed < generation:
                update_state, message = "waiting", "waiting for the statefulset spec update to be observed"
            elif (update_rev and current_rev != update_rev) or updated < desired:
                update_state, message = "progressing", f"{updated} of {desired} pods updated"
            elif ready < desired or replicas != desired:
                update_state, message = "progressing", f"{ready} of {desired} pods ready"
            else:
                update_state = "complete"
            history = _parse_history(annotations, image)
            revision = max(1, _int(annotations.get(ANN_SW_REVISION), history[-1].number))
        return WorkloadState(
            name=spec.name,
            target=self.target,
            desired_replicas=desired,
            ready_replicas=ready,
            running_replicas=replicas,
            updated_replicas=updated,
            image=image,
            revision=max(1, revision),
            version=_spec_version(obj),
            updating=update_state in _UPDATING_STATES,
            update_state=update_state,
            message=message,
        )

    def _deployment_history(
        self, spec: WorkloadSpec, obj: dict[str, Any], rses: list[dict[str, Any]] | None = None
    ) -> tuple[int, dict[int, tuple[str, dict[str, Any] | None]]]:
        """(current revision, {revision: (image, replicaset)}) the way the deployment controller numbers
        them, including a rollout it has not observed yet (see the module docstring)."""
        if rses is None:
            rses = self._replica_sets(spec, obj)
        template = _get(obj, "spec", "template", default={})
        entries: dict[int, tuple[str, dict[str, Any] | None]] = {}
        newest = 0
        match: dict[str, Any] | None = None
        for rs in rses:
            ann = _get(rs, "metadata", "annotations", default={}) or {}
            rev = _int(ann.get(ANN_REVISION))
            if rev < 1:
                continue
            rs_template = _get(rs, "spec", "template", default={})
            image = _first_image(rs_template)
            for old in str(ann.get(ANN_REVISION_HISTORY, "")).split(","):
                if _int(old) >= 1:
                    entries.setdefault(_int(old), (image, rs))
            entries[rev] = (image, rs)
            newest = max(newest, rev)
            if _strip_hash(rs_template) == template:
                match = rs
        if match is not None and _int(_get(match, "metadata", "annotations", ANN_REVISION)) == newest:
            current = newest
        else:
            # Not created yet, or an older ReplicaSet about to be reused: the next number.
            current = newest + 1
            entries[current] = (_first_image(template), match)
        return current, entries

    def revisions(self, spec: WorkloadSpec) -> list[Revision]:
        obj = self._fetch(spec)
        if spec.kubernetes.kind == "StatefulSet":
            image = _first_image(_get(obj, "spec", "template", default={}))
            return _parse_history(_get(obj, "metadata", "annotations", default={}) or {}, image)
        _, entries = self._deployment_history(spec, obj)
        out: list[Revision] = []
        for number in sorted(entries):
            image, rs = entries[number]
            created = _get(rs, "metadata", "creationTimestamp") if rs is not None else None
            source = rs if rs is not None else obj
            template = parse_template(_get(source, "spec", "template", "metadata", "annotations", ANN_SW_SPEC))
            out.append(
                Revision(
                    number=number,
                    image=image,
                    created_at=datetime.fromisoformat(created.replace("Z", "+00:00")) if created else None,
                    spec_hash=template_hash(template) if template is not None else None,
                    template=template,
                )
            )
        return out

    def replicas(self, spec: WorkloadSpec) -> list[ReplicaInfo]:
        obj = self._fetch(spec)
        selector = label_selector(_get(obj, "spec", "selector", default={}) or {})
        if not selector:  # an empty selector would match every pod of the namespace
            raise PermanentError(f"kubernetes {self._plural(spec)} {spec.name!r}: no pod selector")
        ns = spec.kubernetes.namespace
        # A canary's pods carry the stable's labels (its Service balances over both): never list them.
        selector += f",{LABEL_ROLE}!={ROLE_CANARY}"
        data = self._call("list", "pods", ns, "", self.core.list_namespaced_pod, ns, label_selector=selector)
        found = (pod_replica(pod) for pod in data.get("items") or [])
        return sorted((r for r in found if r is not None), key=lambda r: r.id)

    # ----------------------------------------------------------------------------- ownership

    def _foreign_scalers(self, spec: WorkloadSpec) -> list[str]:
        ns = spec.kubernetes.namespace
        data = self._call(
            "list", "horizontalpodautoscalers", ns, "",
            self.autoscaling.list_namespaced_horizontal_pod_autoscaler, ns,
        )
        found: list[str] = []
        for hpa in data.get("items") or []:
            ref = _get(hpa, "spec", "scaleTargetRef", default={}) or {}
            if ref.get("kind") == spec.kubernetes.kind and ref.get("name") == spec.name:
                hname = _get(hpa, "metadata", "name", default="?")
                keda = (_get(hpa, "metadata", "labels", default={}) or {}).get(KEDA_LABEL)
                extra = f" (KEDA ScaledObject {keda})" if keda else ""
                found.append(f"HorizontalPodAutoscaler {ns}/{hname}{extra}")
        return found

    def _check_ownership(self, spec: WorkloadSpec) -> None:
        if spec.kubernetes.allow_foreign_scaler:
            return
        owners = self._foreign_scalers(spec)
        if owners:
            raise OwnershipError(
                f"kubernetes {self._kind(spec)} {spec.kubernetes.namespace}/{spec.name} is already scaled by"
                f" {', '.join(owners)}; refusing to fight it (set kubernetes.allow_foreign_scaler to override)"
            )

    # ----------------------------------------------------------------------------- rendering

    def _labels(self, spec: WorkloadSpec) -> dict[str, str]:
        return {LABEL_NAME: spec.name, LABEL_MANAGED_BY: FIELD_MANAGER}

    def _pod_template(self, spec: WorkloadSpec) -> dict[str, Any]:
        container: dict[str, Any] = {"name": CONTAINER, "image": spec.image}
        if spec.command:
            container["command"] = list(spec.command)
        if spec.env:
            container["env"] = [{"name": k, "value": v} for k, v in sorted(spec.env.items())]
        if spec.ports:
            container["ports"] = [
                {"containerPort": p.container, "protocol": p.protocol.upper()} for p in spec.ports
            ]
        if spec.healthcheck is not None:
            hc = spec.healthcheck
            container["readinessProbe"] = {
                "exec": {"command": ["sh", "-c", hc.command]},
                "periodSeconds": _seconds(hc.interval, 1),
                "timeoutSeconds": _seconds(hc.timeout, 1),
                "failureThreshold": hc.retries,
                "initialDelaySeconds": _seconds(hc.start_period),
            }
        return {
            "metadata": {
                "labels": self._labels(spec),
                "annotations": {ANN_SW_SPEC: dump_template(render_template(spec))},
            },
            "spec": {
                "containers": [container],
                "terminationGracePeriodSeconds": _seconds(spec.stop_grace_period),
            },
        }

    def _render(self, spec: WorkloadSpec, replicas: int, obj: dict[str, Any] | None) -> dict[str, Any]:
        ns = spec.kubernetes.namespace
        metadata: dict[str, Any] = {
            "name": spec.name,
            "namespace": ns,
            "labels": {**spec.labels, **self._labels(spec)},
        }
        if obj is not None:
            metadata["resourceVersion"] = _get(obj, "metadata", "resourceVersion")
        body: dict[str, Any] = {
            "apiVersion": "apps/v1",
            "kind": spec.kubernetes.kind,
            "metadata": metadata,
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {LABEL_NAME: spec.name}},
                "revisionHistoryLimit": REVISION_HISTORY_LIMIT,
                "template": self._pod_template(spec),
            },
        }
        if spec.kubernetes.kind == "Deployment":
            body["spec"]["progressDeadlineSeconds"] = _seconds(spec.kubernetes.progress_deadline, 1)
            body["spec"]["strategy"] = {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": spec.update.max_surge, "maxUnavailable": spec.update.max_unavailable},
            }
            return body
        rolling: dict[str, Any] = {"partition": 0}
        if spec.update.max_unavailable not in (0, "0%"):
            # Honoured where the MaxUnavailableStatefulSet feature is on; 0 is not a valid value.
            rolling["maxUnavailable"] = spec.update.max_unavailable
        body["spec"]["serviceName"] = spec.name
        body["spec"]["podManagementPolicy"] = "Parallel"
        body["spec"]["updateStrategy"] = {"type": "RollingUpdate", "rollingUpdate": rolling}
        annotations = dict(_get(obj, "metadata", "annotations", default={}) or {}) if obj is not None else {}
        current_image = _first_image(_get(obj, "spec", "template", default={})) if obj is not None else spec.image
        if obj is None:
            history, number = [spec_revision(spec, 1, datetime.now(UTC))], 1
        else:
            history, number = record_revision(_parse_history(annotations, current_image), spec, datetime.now(UTC))
        metadata["annotations"] = {ANN_SW_REVISIONS: _dump_history(history), ANN_SW_REVISION: str(number)}
        return body

    def _render_service(self, spec: WorkloadSpec) -> dict[str, Any]:
        ports = [
            {"name": f"{p.protocol}-{p.container}", "port": p.container, "targetPort": p.container,
             "protocol": p.protocol.upper()}
            for p in spec.ports
        ]
        svc_spec: dict[str, Any] = {"clusterIP": "None", "selector": {LABEL_NAME: spec.name}}
        if ports:
            svc_spec["ports"] = ports
        return {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": spec.name, "namespace": spec.kubernetes.namespace,
                         "labels": {**spec.labels, **self._labels(spec)}},
            "spec": svc_spec,
        }

    # ----------------------------------------------------------------------------- writing

    def _server_side_apply(self, spec: WorkloadSpec, body: dict[str, Any]) -> dict[str, Any]:
        ns = spec.kubernetes.namespace
        fn = self._apps_call(spec, "patch")
        return self._call(
            "patch", self._plural(spec), ns, spec.name, fn, spec.name, ns, body,
            field_manager=FIELD_MANAGER, force=True, _content_type="application/apply-patch+yaml",
        )

    def _apply_service(self, spec: WorkloadSpec) -> None:
        ns = spec.kubernetes.namespace
        self._call(
            "patch", "services", ns, spec.name, self.core.patch_namespaced_service, spec.name, ns,
            self._render_service(spec), field_manager=FIELD_MANAGER, force=True,
            _content_type="application/apply-patch+yaml",
        )

    def _patch(self, spec: WorkloadSpec, body: dict[str, Any], content_type: str) -> dict[str, Any]:
        ns = spec.kubernetes.namespace
        fn = self._apps_call(spec, "patch")
        return self._call(
            "patch", self._plural(spec), ns, spec.name, fn, spec.name, ns, body,
            field_manager=FIELD_MANAGER, _content_type=content_type,
        )

    def _checked(self, spec: WorkloadSpec, expected_version: str | None) -> dict[str, Any]:
        obj = self._fetch(spec)
        version = _spec_version(obj)
        if expected_version is not None and version != str(expected_version):
            raise ConflictError(
                f"kubernetes {self._kind(spec)} {spec.kubernetes.namespace}/{spec.name}: observed version"
                f" {expected_version} is stale (now {version}); re-read and decide again"
            )
        return obj

    def _versioned_write(
        self, spec: WorkloadSpec, expected_version: str, write: Callable[[dict[str, Any]], WorkloadState]
    ) -> WorkloadState:
        """``write(obj)`` sends a body carrying ``obj``'s resourceVersion. A 409 caused only by status
        updates (same generation on re-read) is written again on the fresh object; a spec change in
        between raises ConflictError from ``_checked``."""
        attempt = 0
        while True:
            attempt += 1
            obj = self._checked(spec, expected_version)
            try:
                return write(obj)
            except ConflictError:
                if attempt >= STATUS_RACE_ATTEMPTS:
                    raise

    def apply(self, spec: WorkloadSpec, replicas: int | None = None) -> WorkloadState:
        if replicas is not None and replicas < 0:
            raise PermanentError(f"kubernetes {spec.name!r}: replicas cannot be negative ({replicas})")
        attempt = 0
        while True:
            attempt += 1
            try:
                obj: dict[str, Any] | None = self._fetch(spec)
            except NotFoundError:
                obj = None
            current = _int(_get(obj, "spec", "replicas"), 1) if obj is not None else None
            if replicas is not None:
                want = replicas
                if current is not None and replicas != current:
                    self._check_ownership(spec)
            else:
                want = current if current is not None else spec.replicas.start
            if spec.kubernetes.kind == "StatefulSet":
                self._apply_service(spec)
            try:
                result = self._server_side_apply(spec, self._render(spec, want, obj))
            except ConflictError:
                # The object changed between our read and the apply (resourceVersion precondition):
                # re-read and render again, never resend the stale body.
                if attempt >= APPLY_ATTEMPTS:
                    raise
                continue
            return self._state(spec, result)

    def set_replicas(self, spec: WorkloadSpec, replicas: int, expected_version: str) -> WorkloadState:
        if replicas < 0:
            raise PermanentError(f"kubernetes {spec.name!r}: replicas cannot be negative ({replicas})")
        self._check_ownership(spec)
        ns = spec.kubernetes.namespace
        fn, resource = self._apps_call(spec, "patch", "_scale"), f"{self._plural(spec)}/scale"

        def write(obj: dict[str, Any]) -> WorkloadState:
            body = {
                "metadata": {"resourceVersion": _get(obj, "metadata", "resourceVersion")},
                "spec": {"replicas": replicas},
            }
            self._call(
                "patch", resource, ns, spec.name, fn, spec.name, ns, body,
                field_manager=FIELD_MANAGER, _content_type="application/merge-patch+json",
            )
            return self.read(spec)

        return self._versioned_write(spec, expected_version, write)

    def _set_image(self, spec: WorkloadSpec, obj: dict[str, Any], image: str) -> WorkloadState:
        containers = _get(obj, "spec", "template", "spec", "containers", default=[]) or [{"name": CONTAINER}]
        metadata: dict[str, Any] = {"resourceVersion": _get(obj, "metadata", "resourceVersion")}
        # Everything but the image stays as it runs: the new revision is the running spec with it.
        pod_annotations = _get(obj, "spec", "template", "metadata", "annotations", default={}) or {}
        running = parse_template(pod_annotations.get(ANN_SW_SPEC))
        base = restore(spec, Revision(number=1, image=spec.image, template=running)) if running else spec
        new_spec = base.with_image(image)
        if spec.kubernetes.kind == "StatefulSet":
            annotations = _get(obj, "metadata", "annotations", default={}) or {}
            old = _parse_history(annotations, _first_image(_get(obj, "spec", "template", default={})))
            history, number = record_revision(old, new_spec, datetime.now(UTC))
            metadata["annotations"] = {ANN_SW_REVISIONS: _dump_history(history), ANN_SW_REVISION: str(number)}
        container = {"name": containers[0].get("name", CONTAINER), "image": image}
        template_meta = {"annotations": {ANN_SW_SPEC: dump_template(render_template(new_spec))}}
        body = {
            "metadata": metadata,
            "spec": {"template": {"metadata": template_meta, "spec": {"containers": [container]}}},
        }
        result = self._patch(spec, body, "application/strategic-merge-patch+json")
        return self._state(spec, result)

    def update_image(self, spec: WorkloadSpec, image: str, expected_version: str) -> WorkloadState:
        try:
            spec.with_image(image)
        except ValueError as exc:
            raise PermanentError(f"kubernetes {spec.name!r}: bad image {image!r}: {exc}") from None
        def write(obj: dict[str, Any]) -> WorkloadState:
            if _first_image(_get(obj, "spec", "template", default={})) == image:
                return self._state(spec, obj)
            return self._set_image(spec, obj, image)

        return self._versioned_write(spec, expected_version, write)

    def apply_rollback(self, spec: WorkloadSpec, plan: RollbackPlan) -> WorkloadState:
        """Apply the plan's target revision's whole spec. A Deployment's controller then reuses that
        revision's ReplicaSet (same pod template) and numbers it anew, like ``kubectl rollout undo``;
        a StatefulSet gets a new entry in the adapter's own history."""
        return self.apply(restore(spec, plan.target))

    def remove(self, spec: WorkloadSpec) -> None:
        ns = spec.kubernetes.namespace
        fn = self._apps_call(spec, "delete")
        with suppress(NotFoundError):
            self._call("delete", self._plural(spec), ns, spec.name, fn, spec.name, ns, propagation_policy="Background")
        if spec.kubernetes.kind == "Deployment":
            self._delete_canary(spec)
        if spec.kubernetes.kind == "StatefulSet":
            with suppress(NotFoundError):
                self._call("delete", "services", ns, spec.name, self.core.delete_namespaced_service, spec.name, ns)

    # ----------------------------------------------------------------------------- waiting

    def wait_converged(
        self,
        spec: WorkloadSpec,
        timeout_s: float,
        poll_s: float = 0.5,
        on_progress: ProgressFn | None = None,
    ) -> ConvergeResult:
        def settled(state: WorkloadState, elapsed: float) -> ConvergeResult | None:
            if state.update_state == "complete" and state.ready_replicas == state.desired_replicas:
                return ConvergeResult(converged=True, state=state, reason="converged", elapsed_s=elapsed)
            if state.update_state == "deadline_exceeded":
                return ConvergeResult(
                    converged=False,
                    state=state,
                    reason="deadline_exceeded",
                    detail=state.message or "ProgressDeadlineExceeded",
                    elapsed_s=elapsed,
                )
            return None

        # An apiserver restart or a network blip (TransientError): the loop keeps polling until the bound.
        return poll_converged(
            lambda: self.read(spec),
            settled,
            start=time.monotonic(),
            timeout_s=timeout_s,
            poll_s=poll_s,
            on_progress=on_progress,
            progress=lambda state: (
                f"desired {state.desired_replicas}, ready {state.ready_replicas},"
                f" updated {state.updated_replicas} ({state.update_state}: {state.message or '-'})"
            ),
            what=f"kubernetes {spec.name!r}",
        )

    # ----------------------------------------------------------------------------- canary

    def _canary_spec_of(self, spec: WorkloadSpec) -> WorkloadSpec:
        """``spec`` addressing the canary Deployment (same namespace and kind, name ``<name>-canary``)."""
        return spec.model_copy(update={"name": canary_name(spec.name)})

    def _refuse_statefulset(self, spec: WorkloadSpec) -> None:
        if spec.kubernetes.kind != "Deployment":
            raise PermanentError(
                f"kubernetes {spec.kubernetes.kind} {spec.kubernetes.namespace}/{spec.name}: update.strategy"
                f" canary is not supported for kind {spec.kubernetes.kind} on target {self.target}"
                " (only Deployments); use a rolling update"
            )

    def _fetch_canary(self, spec: WorkloadSpec) -> dict[str, Any] | None:
        if spec.kubernetes.kind != "Deployment":
            return None
        try:
            return self._fetch(self._canary_spec_of(spec))
        except NotFoundError:
            return None

    def _canary_state(self, spec: WorkloadSpec, obj: dict[str, Any]) -> CanaryState:
        annotations = _get(obj, "metadata", "annotations", default={}) or {}
        template = _get(obj, "spec", "template", default={})
        return CanaryState(
            name=spec.name,
            image=_first_image(template),
            weight=min(100, max(0, _int(annotations.get(ANN_CANARY_WEIGHT)))),
            desired_replicas=max(0, _int(_get(obj, "spec", "replicas"), 1)),
            ready_replicas=max(0, _int(_get(obj, "status", "readyReplicas"))),
            spec_hash=annotations.get(ANN_CANARY_HASH) or None,
            template=parse_template(_get(template, "metadata", "annotations", ANN_SW_SPEC)),
        )

    def _render_canary(
        self, spec: WorkloadSpec, canary: WorkloadSpec, weight: int, replicas: int, obj: dict[str, Any] | None
    ) -> dict[str, Any]:
        """The canary Deployment: the stable's rendering of ``canary`` (same pod labels, so a Service
        selecting the stable's pods balances over both by pod count) plus the role label, which its
        own selector requires; its weight and its spec's hash as annotations."""
        body = self._render(canary.model_copy(update={"name": spec.name}), replicas, None)
        body["metadata"]["name"] = canary_name(spec.name)
        body["metadata"]["labels"][LABEL_ROLE] = ROLE_CANARY
        body["metadata"]["annotations"] = {
            ANN_CANARY_WEIGHT: str(weight),
            ANN_CANARY_HASH: template_hash(render_template(canary)),
        }
        if obj is not None:
            body["metadata"]["resourceVersion"] = _get(obj, "metadata", "resourceVersion")
        body["spec"]["selector"] = {"matchLabels": {LABEL_NAME: spec.name, LABEL_ROLE: ROLE_CANARY}}
        body["spec"]["template"]["metadata"]["labels"][LABEL_ROLE] = ROLE_CANARY
        body["spec"]["revisionHistoryLimit"] = 0  # the stable keeps the revisions; a canary is one spec
        return body

    def read_canary(self, spec: WorkloadSpec) -> CanaryState | None:
        obj = self._fetch_canary(spec)
        return None if obj is None else self._canary_state(spec, obj)

    def set_canary(self, spec: WorkloadSpec, canary: WorkloadSpec, weight: int) -> CanaryState:
        """Apply the canary Deployment sized to ``weight`` percent of the stable's desired replicas
        (versioned like ``apply``), then wait until that many canary pods are ready (bounded by the
        canary's ``update.timeout``; CanaryFailed leaves it for the abort)."""
        self._refuse_statefulset(spec)
        stable = self._fetch(spec)
        try:
            want = canary_replicas(weight, _int(_get(stable, "spec", "replicas"), 1))
        except ValueError as exc:
            raise PermanentError(f"kubernetes workload {spec.name!r}: set_weight: {exc}") from None
        thash = template_hash(render_template(canary))
        cspec = self._canary_spec_of(spec)
        attempt = 0
        while True:
            attempt += 1
            obj = self._fetch_canary(spec)
            if obj is not None:
                running = self._canary_state(spec, obj)
                if running.spec_hash != thash:
                    raise PermanentError(
                        f"kubernetes workload {spec.name!r}: a canary of {running.image} is running;"
                        " promote or abort it first"
                    )
            try:
                self._server_side_apply(cspec, self._render_canary(spec, canary, weight, want, obj))
            except ConflictError:
                if attempt >= APPLY_ATTEMPTS:
                    raise
                continue
            break
        deadline = time.monotonic() + canary.update.timeout
        state: CanaryState | None = None
        while True:
            with suppress(TransientError):
                obj = self._fetch_canary(spec)
                if obj is not None:
                    state = self._canary_state(spec, obj)
                    observed = _int(_get(obj, "status", "observedGeneration"))
                    updated = _int(_get(obj, "status", "updatedReplicas"))
                    if (
                        observed >= _int(_get(obj, "metadata", "generation"))
                        and updated >= want
                        and state.ready_replicas >= want
                    ):
                        return state
            if time.monotonic() >= deadline:
                ready = state.ready_replicas if state is not None else 0
                raise CanaryFailed(
                    spec.name,
                    f"{canary.image}: {ready} of {want} canary pods ready after {canary.update.timeout:g}s",
                )
            time.sleep(0.5)

    def promote_canary(self, spec: WorkloadSpec) -> WorkloadState:
        """Roll the stable to the canary's spec (the versioned apply: the Deployment's own rolling
        update with the workload's surge settings), wait for it (bounded by ``update.timeout``), then
        delete the canary. Repeatable: a stable already on the canary's spec only loses the canary."""
        self._refuse_statefulset(spec)
        state = self.read_canary(spec)
        if state is None:
            raise PermanentError(f"kubernetes workload {spec.name!r}: no canary to promote")
        if state.template is None:
            raise PermanentError(f"kubernetes workload {spec.name!r}: the canary's pods carry no spec; abort it")
        target = canary_spec(spec, state)
        stable = self._fetch(spec)
        running = parse_template(_get(stable, "spec", "template", "metadata", "annotations", ANN_SW_SPEC))
        # The stable's own rolling update, undone when it does not converge (the canary then stays).
        roll_stable_to(self, spec, target, apply=running is None or template_hash(running) != state.spec_hash)
        self._delete_canary(spec)
        return self.read(spec)

    def _delete_canary(self, spec: WorkloadSpec) -> None:
        cspec = self._canary_spec_of(spec)
        ns = spec.kubernetes.namespace
        with suppress(NotFoundError):
            self._call(
                "delete", "deployments", ns, cspec.name, self.apps.delete_namespaced_deployment, cspec.name, ns,
                propagation_policy="Background",
            )

    def abort_canary(self, spec: WorkloadSpec) -> WorkloadState:
        """Delete the canary Deployment (its pods go with it); the stable is not touched."""
        if spec.kubernetes.kind == "Deployment":
            self._delete_canary(spec)
        return self.read(spec)


__all__ = ["FIELD_MANAGER", "KubernetesOrchestrator", "canary_name", "map_api_error", "merge_patch"]
