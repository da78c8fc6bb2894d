"""Smoke tests for the real Kubernetes test control plane (tests/support/kube.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.support.kube import ControlPlane

pytestmark = pytest.mark.kube


def _deployment(name: str, image: str, replicas: int, progress_deadline: int = 600) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "progressDeadlineSeconds": progress_deadline,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "main", "image": image}]},
            },
        },
    }


def _wait_for(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.2)


def test_cluster_basics(kube_cluster: ControlPlane) -> None:
    from kubernetes import client

    api = kube_cluster.api_client()
    # The client's models are Optional everywhere; treat API objects as dynamic here.
    core: Any = client.CoreV1Api(api)
    nodes = core.list_node().items
    names = {n.metadata.name for n in nodes}
    assert set(kube_cluster.node_names) <= names
    for n in nodes:
        ready = [c for c in n.status.conditions if c.type == "Ready"]
        assert ready and ready[0].status == "True"
    assert core.read_namespaced_service_account("default", "default").metadata.name == "default"
    assert kube_cluster.server.startswith("https://127.0.0.1:")
    assert kube_cluster.ca_file.is_file()


def test_deployment_becomes_ready(kube_cluster: ControlPlane) -> None:
    from kubernetes import client

    ns = kube_cluster.new_namespace("ready")
    apps: Any = client.AppsV1Api(kube_cluster.api_client())
    apps.create_namespaced_deployment(ns, _deployment("web", "busybox:1", 3))

    def ready() -> bool:
        d = apps.read_namespaced_deployment_status("web", ns)
        return (d.status.ready_replicas or 0) == 3 and (d.status.updated_replicas or 0) == 3

    _wait_for(ready, 60, "3 ready replicas")

    core: Any = client.CoreV1Api(kube_cluster.api_client())
    pods = core.list_namespaced_pod(ns, label_selector="app=web").items
    assert len(pods) == 3
    for p in pods:
        assert p.status.phase == "Running"
        assert p.status.pod_ip
        assert p.spec.node_name in kube_cluster.node_names

    # Scale down: KWOK's delete stage must actually remove the pods.
    apps.patch_namespaced_deployment_scale("web", ns, {"spec": {"replicas": 1}})
    _wait_for(
        lambda: len(core.list_namespaced_pod(ns, label_selector="app=web").items) == 1,
        60,
        "scale-down to 1 pod",
    )


def test_never_ready_image_stays_unready(kube_cluster: ControlPlane) -> None:
    from kubernetes import client

    ns = kube_cluster.new_namespace("never")
    apps: Any = client.AppsV1Api(kube_cluster.api_client())
    core: Any = client.CoreV1Api(kube_cluster.api_client())
    apps.create_namespaced_deployment(ns, _deployment("stuck", "example.invalid/never-ready:1", 2, progress_deadline=3))

    def running() -> bool:
        pods = core.list_namespaced_pod(ns, label_selector="app=stuck").items
        return len(pods) == 2 and all(p.status.phase == "Running" for p in pods)

    _wait_for(running, 60, "2 Running pods")
    time.sleep(3)
    d = apps.read_namespaced_deployment_status("stuck", ns)
    assert (d.status.ready_replicas or 0) == 0
    for p in core.list_namespaced_pod(ns, label_selector="app=stuck").items:
        assert p.status.phase == "Running"
        ready = [c for c in p.status.conditions if c.type == "Ready"]
        assert ready and ready[0].status == "False"
        assert all(not cs.ready for cs in p.status.container_statuses)

    # The rollout cannot progress, so the deployment controller must give up.
    def deadline_exceeded() -> bool:
        conds = apps.read_namespaced_deployment_status("stuck", ns).status.conditions or []
        return any(c.type == "Progressing" and c.reason == "ProgressDeadlineExceeded" for c in conds)

    _wait_for(deadline_exceeded, 60, "ProgressDeadlineExceeded")


def test_rbac_is_enforced(kube_cluster: ControlPlane) -> None:
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    ns = kube_cluster.new_namespace("rbac")
    core: Any = client.CoreV1Api(kube_cluster.api_client())
    tr = core.create_namespaced_service_account_token(
        "default", ns, {"spec": {"audiences": [], "expirationSeconds": 600}}
    )
    cfg = client.Configuration()
    cfg.host = kube_cluster.server
    cfg.ssl_ca_cert = str(kube_cluster.ca_file)
    cfg.api_key = {"authorization": f"Bearer {tr.status.token}"}
    sa_core: Any = client.CoreV1Api(client.ApiClient(cfg))
    with pytest.raises(ApiException) as exc:
        sa_core.list_namespaced_pod(ns)
    assert exc.value.status == 403

    rbac: Any = client.RbacAuthorizationV1Api(kube_cluster.api_client())
    rbac.create_namespaced_role(
        ns,
        {
            "metadata": {"name": "pod-reader"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}],
        },
    )
    rbac.create_namespaced_role_binding(
        ns,
        {
            "metadata": {"name": "pod-reader"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"},
            "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": ns}],
        },
    )
    _wait_for(lambda: _can_list(sa_core, ns), 10, "RBAC grant to take effect")


def _can_list(core: Any, ns: str) -> bool:
    from kubernetes.client.rest import ApiException

    try:
        core.list_namespaced_pod(ns)
    except ApiException:
        return False
    return True


def test_restart_apiserver(kube_cluster: ControlPlane) -> None:
    from kubernetes import client

    ns = kube_cluster.new_namespace("restart")
    kube_cluster.restart_apiserver()
    core: Any = client.CoreV1Api(kube_cluster.api_client())
    assert core.read_namespace(ns).metadata.name == ns
    # The rest of the control plane still works after the restart.
    kube_cluster.new_namespace("after-restart")
