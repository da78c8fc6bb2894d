"""deployments/kubernetes/rbac.yaml is enough for every adapter operation, and nothing in it is spare.

The ServiceAccount's token comes from the TokenRequest API; the adapter then runs with a kubeconfig
holding only that token, on the real control plane (RBAC authorizer on).
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from scalewise.errors import ForbiddenError, NotFoundError, OwnershipError
from scalewise.orchestrators.kube import KubernetesOrchestrator
from scalewise.spec import WorkloadSpec
from tests.support.docker_env import IMAGE_V1, IMAGE_V2, unique_name
from tests.support.kube import ControlPlane
from tests.support.targets import roll_back

pytestmark = pytest.mark.kube
RBAC_FILE = Path(__file__).resolve().parents[1] / "deployments" / "kubernetes" / "rbac.yaml"
WAIT_S = 60.0


def rbac_docs(namespace: str) -> list[dict[str, Any]]:
    """rbac.yaml with its namespace ("scalewise") replaced by ``namespace``."""
    docs = [d for d in yaml.safe_load_all(RBAC_FILE.read_text()) if d]
    for doc in docs:
        doc["metadata"]["namespace"] = namespace
        for subject in doc.get("subjects", []):
            subject["namespace"] = namespace
    return docs


def role_rules() -> list[dict[str, Any]]:
    role = next(d for d in rbac_docs("x") if d["kind"] == "Role")
    rules: list[dict[str, Any]] = role["rules"]
    return rules


def grants() -> list[tuple[str, str]]:
    """Every (resource, verb) pair the Role grants."""
    return [(res, verb) for rule in role_rules() for res in rule["resources"] for verb in rule["verbs"]]


def without(docs: list[dict[str, Any]], resource: str, verb: str) -> list[dict[str, Any]]:
    out = copy.deepcopy(docs)
    role = next(d for d in out if d["kind"] == "Role")
    rules: list[dict[str, Any]] = []
    for rule in role["rules"]:
        for res in rule["resources"]:
            verbs = [v for v in rule["verbs"] if (res, v) != (resource, verb)]
            if verbs:
                rules.append({"apiGroups": rule["apiGroups"], "resources": [res], "verbs": verbs})
    role["rules"] = rules
    return out


def grant(kube_cluster: ControlPlane, docs: list[dict[str, Any]], tmp_path: Path) -> None:
    path = tmp_path / f"rbac-{unique_name('r')}.json"
    path.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}))
    kube_cluster.kubectl("apply", "-f", str(path))


def sa_kubeconfig(kube_cluster: ControlPlane, namespace: str, tmp_path: Path) -> Path:
    from kubernetes import client

    core: Any = client.CoreV1Api(kube_cluster.api_client())
    token = core.create_namespaced_service_account_token(
        "scalewise", namespace, {"spec": {"audiences": [], "expirationSeconds": 3600}}
    ).status.token
    cluster = {"server": kube_cluster.server, "certificate-authority": str(kube_cluster.ca_file)}
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": "scalewise", "user": {"token": token}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "scalewise", "namespace": namespace}}],
        "current-context": "c",
    }
    path = tmp_path / f"kubeconfig-{namespace}"
    path.write_text(json.dumps(cfg))
    return path


def make_spec(namespace: str, kind: str = "Deployment", allow_foreign_scaler: bool = False) -> WorkloadSpec:
    return WorkloadSpec.model_validate(
        {
            "name": unique_name("rbac"),
            "target": "kubernetes",
            "image": IMAGE_V1,
            "replicas": {"min": 0, "max": 10, "initial": 1},
            "ports": [{"container": 8080}],
            "update": {"max_surge": 1, "max_unavailable": 0},
            "kubernetes": {
                "namespace": namespace, "kind": kind, "progress_deadline": 120,  # not the subject here
                "allow_foreign_scaler": allow_foreign_scaler,
            },
        }
    )


def converge(orch: KubernetesOrchestrator, spec: WorkloadSpec) -> None:
    result = orch.wait_converged(spec, timeout_s=WAIT_S, poll_s=0.2)
    assert result.converged, result


def wait_rbac(orch: KubernetesOrchestrator, spec: WorkloadSpec) -> None:
    """RBAC changes reach the authorizer through an informer: wait until the grant is visible."""
    deadline = time.monotonic() + 15
    while True:
        try:
            orch.exists(spec)
            return
        except ForbiddenError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def exercise(orch: KubernetesOrchestrator, kube_cluster: ControlPlane, namespace: str) -> None:
    """Every adapter operation, on a Deployment and on a StatefulSet."""
    from kubernetes import client

    dep = make_spec(namespace)
    wait_rbac(orch, dep)
    assert not orch.exists(dep)
    orch.apply(dep)
    converge(orch, dep)
    assert orch.apply(dep).version == orch.read(dep).version
    orch.set_replicas(dep, 2, orch.read(dep).version)
    converge(orch, dep)
    orch.update_image(dep, IMAGE_V2, orch.read(dep).version)
    converge(orch, dep)
    assert [r.image for r in orch.revisions(dep)] == [IMAGE_V1, IMAGE_V2]
    roll_back(orch, dep)
    converge(orch, dep)
    roll_back(orch, dep, to_revision=2)
    converge(orch, dep)
    assert orch.read(dep).image == IMAGE_V2
    # The canary (a second Deployment) needs no grant beyond the Deployment's own.
    assert orch.set_canary(dep, dep.with_image(IMAGE_V1), 50).ready_replicas == 1
    assert orch.read_canary(dep) is not None
    orch.abort_canary(dep)
    orch.set_canary(dep, dep.with_image(IMAGE_V1), 50)
    assert orch.promote_canary(dep).image == IMAGE_V1
    assert orch.read_canary(dep) is None
    # The HPA check runs with the same token: an HPA (created by an admin) is seen and respected.
    autoscaling: Any = client.AutoscalingV2Api(kube_cluster.api_client())
    autoscaling.create_namespaced_horizontal_pod_autoscaler(
        namespace,
        {
            "metadata": {"name": f"{dep.name}-hpa"},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": dep.name},
                "minReplicas": 1, "maxReplicas": 4,
            },
        },
    )
    with pytest.raises(OwnershipError, match=f"{dep.name}-hpa"):
        orch.set_replicas(dep, 3, orch.read(dep).version)
    orch.remove(dep)
    orch.remove(dep)
    assert not orch.exists(dep)

    sts = make_spec(namespace, kind="StatefulSet")
    orch.apply(sts)
    converge(orch, sts)
    orch.set_replicas(sts, 2, orch.read(sts).version)
    converge(orch, sts)
    orch.update_image(sts, IMAGE_V2, orch.read(sts).version)
    converge(orch, sts)
    roll_back(orch, sts)
    converge(orch, sts)
    assert [r.image for r in orch.revisions(sts)] == [IMAGE_V1, IMAGE_V2, IMAGE_V1]
    orch.remove(sts)
    orch.remove(sts)
    assert not orch.exists(sts)


@pytest.fixture
def sa_namespace(kube_cluster: ControlPlane) -> Iterator[str]:
    ns = kube_cluster.new_namespace("rbac")
    yield ns
    kube_cluster.delete_namespace(ns)


def test_every_operation_works_with_exactly_the_role(
    kube_cluster: ControlPlane, sa_namespace: str, tmp_path: Path
) -> None:
    grant(kube_cluster, rbac_docs(sa_namespace), tmp_path)
    orch = KubernetesOrchestrator.from_kubeconfig(sa_kubeconfig(kube_cluster, sa_namespace, tmp_path))
    try:
        exercise(orch, kube_cluster, sa_namespace)

        # The same ServiceAccount acting elsewhere is refused, and the error names what was denied.
        other = kube_cluster.new_namespace("elsewhere")
        try:
            spec = make_spec(other)
            with pytest.raises(ForbiddenError, match=f"forbidden: cannot get deployments in namespace {other}"):
                orch.apply(spec)
            with pytest.raises(ForbiddenError, match=f"forbidden: cannot delete deployments in namespace {other}"):
                orch.remove(spec)
            with pytest.raises(ForbiddenError, match=f"forbidden: cannot get statefulsets in namespace {other}"):
                orch.read(make_spec(other, kind="StatefulSet"))
        finally:
            kube_cluster.delete_namespace(other)
        # Nothing cluster-scoped: the token cannot delete (or even read) namespaces.
        from kubernetes import client
        from kubernetes.client.rest import ApiException

        core: Any = client.CoreV1Api(orch.api_client)
        with pytest.raises(ApiException) as denied:
            core.delete_namespace(sa_namespace)
        assert denied.value.status == 403
    finally:
        orch.close()


@pytest.mark.parametrize(("resource", "verb"), grants(), ids=lambda v: str(v))
def test_no_grant_is_spare(
    kube_cluster: ControlPlane, sa_namespace: str, tmp_path: Path, resource: str, verb: str
) -> None:
    """Drop one (resource, verb) from the Role: some operation now fails with a ForbiddenError that
    names exactly that verb and resource."""
    grant(kube_cluster, without(rbac_docs(sa_namespace), resource, verb), tmp_path)
    orch = KubernetesOrchestrator.from_kubeconfig(sa_kubeconfig(kube_cluster, sa_namespace, tmp_path))
    try:
        # wait_rbac needs "get deployments"; without it the very first call is the expected refusal.
        with pytest.raises(ForbiddenError) as refused:
            exercise(orch, kube_cluster, sa_namespace)
        assert f"forbidden: cannot {verb} {resource} in namespace {sa_namespace}" in str(refused.value)
    finally:
        orch.close()


def test_missing_grant_is_not_mistaken_for_not_found(
    kube_cluster: ControlPlane, sa_namespace: str, tmp_path: Path
) -> None:
    # ServiceAccount exists but has no Role at all.
    sa_only = [d for d in rbac_docs(sa_namespace) if d["kind"] == "ServiceAccount"]
    grant(kube_cluster, sa_only, tmp_path)
    orch = KubernetesOrchestrator.from_kubeconfig(sa_kubeconfig(kube_cluster, sa_namespace, tmp_path))
    try:
        spec = make_spec(sa_namespace)
        with pytest.raises(ForbiddenError) as refused:
            orch.exists(spec)
        assert not isinstance(refused.value, NotFoundError)
        assert "cannot get deployments" in str(refused.value)
    finally:
        orch.close()


WORKER_FILE = RBAC_FILE.parent / "worker.yaml"


def worker_docs(namespace: str) -> list[dict[str, Any]]:
    """worker.yaml with its namespace ("scalewise") replaced by ``namespace``."""
    docs = [d for d in yaml.safe_load_all(WORKER_FILE.read_text()) if d]
    for doc in docs:
        doc["metadata"]["namespace"] = namespace
        for subject in doc.get("subjects", []):
            subject["namespace"] = namespace
    return docs


def can_i(kube_cluster: ControlPlane, namespace: str, sa: str, verb: str, resource: str, where: str) -> bool:
    out = kube_cluster.kubectl(
        "auth", "can-i", verb, resource, "-n", where, f"--as=system:serviceaccount:{namespace}:{sa}", check=False
    )
    return out.stdout.strip() == "yes"


def test_worker_manifest_is_valid_and_its_role_is_least_privilege(
    kube_cluster: ControlPlane, sa_namespace: str, tmp_path: Path
) -> None:
    docs = worker_docs(sa_namespace)
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == ["Deployment", "Role", "RoleBinding", "ServiceAccount"]
    worker = next(d for d in docs if d["kind"] == "Deployment")
    pod = worker["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "scalewise-worker"
    assert pod["securityContext"]["runAsNonRoot"] is True
    command = pod["containers"][0]["command"]
    assert command[:3] == ["prefect", "worker", "start"] and command[command.index("--type") + 1] == "kubernetes"
    # The whole manifest passes the API server's validation and admission (nothing stored).
    path = tmp_path / "worker.json"
    path.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}))
    out = kube_cluster.kubectl("apply", "--dry-run=server", "-f", str(path), check=False)
    assert out.returncode == 0, out.stderr
    # Granted for real: the worker may run and follow Jobs here, and nothing else.
    grant(kube_cluster, [d for d in docs if d["kind"] != "Deployment"], tmp_path)
    sa = "scalewise-worker"
    deadline = time.monotonic() + 15  # RBAC reaches the authorizer through an informer
    while not can_i(kube_cluster, sa_namespace, sa, "create", "jobs.batch", sa_namespace):
        assert time.monotonic() < deadline, "the worker's Role never took effect"
        time.sleep(0.2)
    for verb, resource in [("create", "jobs.batch"), ("watch", "jobs.batch"), ("delete", "jobs.batch"),
                           ("list", "pods"), ("watch", "pods"), ("get", "pods/log"), ("create", "events")]:
        assert can_i(kube_cluster, sa_namespace, sa, verb, resource, sa_namespace), (verb, resource)
    for verb, resource in [("get", "secrets"), ("create", "pods"), ("patch", "deployments.apps"),
                           ("delete", "pods"), ("create", "rolebindings.rbac.authorization.k8s.io")]:
        assert not can_i(kube_cluster, sa_namespace, sa, verb, resource, sa_namespace), (verb, resource)
    assert not can_i(kube_cluster, sa_namespace, sa, "create", "jobs.batch", "default")
    assert not can_i(kube_cluster, sa_namespace, sa, "get", "namespaces", sa_namespace)


def test_rejected_token_is_a_clear_forbidden_error(
    kube_cluster: ControlPlane, sa_namespace: str, tmp_path: Path
) -> None:
    cfg = json.loads(kube_cluster.kubeconfig.read_text())
    cfg["users"][0]["user"]["token"] = "not-a-valid-token"
    path = tmp_path / "bad-kubeconfig"
    path.write_text(json.dumps(cfg))
    orch = KubernetesOrchestrator.from_kubeconfig(path)
    try:
        with pytest.raises(ForbiddenError, match=f"unauthorized: .*cannot get deployments in namespace {sa_namespace}"):
            orch.read(make_spec(sa_namespace))
    finally:
        orch.close()
