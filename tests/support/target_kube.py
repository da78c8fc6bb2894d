"""``kubernetes_target``: a :class:`TargetHarness` over the real test control plane (KWOK pods).

KWOK runs no containers: every image becomes Running+Ready except images containing
``never-ready``, which stay Running but never Ready, so the harness's broken image is one of those.
Each test gets a fresh namespace; the progress deadline is short so a broken rollout fails fast.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scalewise.errors import ScalewiseError
from scalewise.orchestrators.kube import LABEL_NAME, KubernetesOrchestrator
from scalewise.spec import WorkloadSpec
from tests.support.kube import ControlPlane
from tests.support.targets import TargetHarness, spec_factory

#: KWOK keeps pods of an image containing "never-ready" Running but never Ready.
IMAGE_NEVER_READY = "scalewise/busybox:never-ready"
#: Roomy for a loaded 2-core machine (a KWOK rollout is seconds); only the broken-image cases wait it out.
PROGRESS_DEADLINE_S = 30


def kube_config(cluster: ControlPlane) -> dict[str, Any]:
    config: dict[str, Any] = json.loads(cluster.kubeconfig.read_text())
    return config


def routed_kubeconfig(cluster: ControlPlane, address: str) -> Path:
    """A copy of the cluster's kubeconfig whose server is ``https://<address>`` (a proxy in front)."""
    config = kube_config(cluster)
    config["clusters"][0]["cluster"]["server"] = f"https://{address}"
    path = cluster.kubeconfig.with_name(f"kubeconfig-via-{address.replace(':', '-')}")
    path.write_text(json.dumps(config))
    return path
def pod_env(kube_cluster: ControlPlane, spec: WorkloadSpec) -> list[dict[str, str]]:
    """The env of the first container of each live (not terminating) pod of ``spec``."""
    out = kube_cluster.kubectl(
        "get", "pods", "-n", spec.kubernetes.namespace, "-l", f"{LABEL_NAME}={spec.name}", "-o", "json"
    )
    items: list[dict[str, Any]] = json.loads(out.stdout)["items"]
    return [
        {e["name"]: e.get("value", "") for e in p["spec"]["containers"][0].get("env") or []}
        for p in items
        if not p["metadata"].get("deletionTimestamp")
    ]


@pytest.fixture
def kubernetes_target(kube_cluster: ControlPlane) -> Iterator[TargetHarness]:
    namespace = kube_cluster.new_namespace("contract")
    orchestrator = KubernetesOrchestrator.from_kubeconfig(kube_cluster.kubeconfig)
    created: list[WorkloadSpec] = []

    def cleanup() -> None:
        errors: list[str] = []
        while created:
            spec = created.pop()
            try:
                orchestrator.remove(spec)
            except ScalewiseError as exc:
                errors.append(f"{spec.name}: {exc}")
        if errors:
            raise AssertionError("cleanup failed: " + "; ".join(errors))

    harness = TargetHarness(
        orchestrator=orchestrator,
        make_spec=spec_factory(
            "kubernetes", created, kubernetes={"namespace": namespace, "progress_deadline": PROGRESS_DEADLINE_S}
        ),
        cleanup=cleanup,
        fetch=None,
        created=created,
        broken_image=IMAGE_NEVER_READY,
        upstream=str(kube_config(kube_cluster)["clusters"][0]["cluster"]["server"]).removeprefix("https://"),
        route_env=lambda address: {"KUBECONFIG": str(routed_kubeconfig(kube_cluster, address))},
        live_env=lambda spec: pod_env(kube_cluster, spec),
    )
    try:
        yield harness
    finally:
        try:
            cleanup()
        finally:
            orchestrator.close()
            kube_cluster.delete_namespace(namespace)
