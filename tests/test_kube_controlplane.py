"""Smoke tests for the real Kubernetes test control plane (tests/support/kube.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.support.kube import ControlPlane

pytestmark = pytest.mark.kube


def _deployment(name: str, image: str, replicas: int) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "progressDeadlineSeconds": 600,
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
    apps.create_namespaced_deployment(ns, _deployment("stuck", "example.invalid/never-ready:1", 2))

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
