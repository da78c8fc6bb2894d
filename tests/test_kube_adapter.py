"""Kubernetes adapter specifics on the real test control plane (KWOK pods; no mocks)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from scalewise import operations, orchestrators
from scalewise.errors import ConflictError, OwnershipError, PermanentError, RolloutFailed, TransientError
from scalewise.local import LocalServer
from scalewise.model import WorkloadState
from scalewise.orchestrators.kube import LABEL_NAME, KubernetesOrchestrator
from scalewise.spec import WorkloadSpec
from tests.support.docker_env import IMAGE_V1, IMAGE_V2, IMAGE_V3, unique_name
from tests.support.kube import ControlPlane, free_port
from tests.support.target_kube import IMAGE_NEVER_READY
from tests.support.targets import TargetHarness, roll_back

pytestmark = pytest.mark.kube
WAIT_S = 60.0


def converge(orch: KubernetesOrchestrator, spec: WorkloadSpec, timeout_s: float = WAIT_S) -> WorkloadState:
    result = orch.wait_converged(spec, timeout_s=timeout_s, poll_s=0.25)
    assert result.converged, result
    return result.state


def deploy(target: TargetHarness, replicas: int = 2, **kw: Any) -> WorkloadSpec:
    spec = target.make_spec(replicas=replicas, **kw)
    target.orchestrator.apply(spec)
    converge(target.orchestrator, spec)  # type: ignore[arg-type]
    return spec


def variant(target: TargetHarness, spec: WorkloadSpec, **kube: Any) -> WorkloadSpec:
    """``spec`` with changed ``kubernetes`` options, registered for cleanup."""
    out = spec.model_copy(update={"kubernetes": spec.kubernetes.model_copy(update=kube)})
    target.created.append(out)
    return out


def pods(kube_cluster: ControlPlane, spec: WorkloadSpec) -> list[dict[str, Any]]:
    out = kube_cluster.kubectl(
        "get", "pods", "-n", spec.kubernetes.namespace, "-l", f"{LABEL_NAME}={spec.name}", "-o", "json"
    )
    items: list[dict[str, Any]] = json.loads(out.stdout)["items"]
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def is_ready(pod: dict[str, Any]) -> bool:
    conds = pod.get("status", {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)


@pytest.fixture
def orch(kubernetes_target: TargetHarness) -> KubernetesOrchestrator:
    assert isinstance(kubernetes_target.orchestrator, KubernetesOrchestrator)
    return kubernetes_target.orchestrator


# ------------------------------------------------------------------ rollouts


def test_never_ready_rollout_hits_progress_deadline_and_is_rolled_back(
    kubernetes_target: TargetHarness, orch: KubernetesOrchestrator, kube_cluster: ControlPlane
) -> None:
    spec = deploy(kubernetes_target, replicas=2)
    old_pods = {p["metadata"]["name"] for p in pods(kube_cluster, spec)}
    samples: list[WorkloadState] = []
    t0 = time.monotonic()
    with pytest.raises(RolloutFailed) as failed:
        operations.rolling_update(orch, spec, IMAGE_NEVER_READY, timeout_s=60, on_progress=samples.append)
    elapsed = time.monotonic() - t0
    assert "deadline_exceeded" in str(failed.value), failed.value
    assert failed.value.rolled_back_to == 1
    assert elapsed < 45, f"the progress deadline (10s) should end the rollout early, took {elapsed:.0f}s"
    assert any(s.update_state == "deadline_exceeded" for s in samples)
    assert min(s.ready_replicas for s in samples) == 2, "maxUnavailable 0: the old replicas stay ready"
    state = orch.read(spec)
    assert (state.image, state.desired_replicas, state.ready_replicas) == (IMAGE_V1, 2, 2)
    assert state.update_state == "complete"
    assert state.revision == 3  # 1 (v1), 2 (never-ready), 3 (v1's ReplicaSet reused)
    # The old ReplicaSet's pods were never replaced: same pods, still ready, and no never-ready pod left.
    now = pods(kube_cluster, spec)
    assert {p["metadata"]["name"] for p in now} == old_pods
    assert all(is_ready(p) and p["spec"]["containers"][0]["image"] == IMAGE_V1 for p in now)
    history = orch.revisions(spec)
    assert [(r.number, r.image) for r in history] == [(1, IMAGE_V1), (2, IMAGE_NEVER_READY), (3, IMAGE_V1)]


def test_rollback_restores_the_whole_pod_template(
    kubernetes_target: TargetHarness, orch: KubernetesOrchestrator, kube_cluster: ControlPlane
) -> None:
    spec = deploy(kubernetes_target, replicas=1)
    changed = spec.model_copy(update={"image": IMAGE_V2, "env": {"MODE": "two"}, "command": ["sleep", "1d"]})
    orch.apply(changed)
    converge(orch, changed)
    state = roll_back(orch, spec)
    converge(orch, spec)
    live = json.loads(
        kube_cluster.kubectl("get", "deployment", spec.name, "-n", spec.kubernetes.namespace, "-o", "json").stdout
    )
    container = live["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == IMAGE_V1 == state.image
    assert "env" not in container and "command" not in container, container
    assert "pod-template-hash" not in live["spec"]["template"]["metadata"]["labels"]
    with pytest.raises(PermanentError, match=r"unknown revision 42 \(known: .*1 .*2 "):
        roll_back(orch, spec, to_revision=42)


# ------------------------------------------------------------------ conflicts


class InterposingOrchestrator(KubernetesOrchestrator):
    """Lets another writer scale the workload between our read and our first write."""

    def __init__(self, base: KubernetesOrchestrator, kube_cluster: ControlPlane, other_replicas: int) -> None:
        super().__init__(base.api_client)
        self.kube_cluster = kube_cluster
        self.other_replicas = other_replicas
        self.interposed = 0

    def set_replicas(self, spec: WorkloadSpec, replicas: int, expected_version: str) -> WorkloadState:
        if not self.interposed:
            self.interposed += 1
            self.kube_cluster.kubectl(
                "scale", "deployment", spec.name, "-n", spec.kubernetes.namespace, f"--replicas={self.other_replicas}"
            )
        return super().set_replicas(spec, replicas, expected_version)


def test_stale_scale_conflicts_and_operations_scale_re_decides(
    kubernetes_target: TargetHarness, orch: KubernetesOrchestrator, kube_cluster: ControlPlane
) -> None:
    spec = deploy(kubernetes_target, replicas=1)
    # A raw stale write is refused by the apiserver's resourceVersion precondition, nothing written.
    stale = orch.read(spec).version
    kube_cluster.kubectl("scale", "deployment", spec.name, "-n", spec.kubernetes.namespace, "--replicas=2")
    with pytest.raises(ConflictError, match=r"stale|changed"):
        orch.set_replicas(spec, 5, stale)
    assert orch.read(spec).desired_replicas == 2
    converge(orch, spec)

    # operations.scale: read 2 -> plan 3; someone scales to 4 meanwhile -> 409 -> re-read 4 -> plan 5.
    racing = InterposingOrchestrator(orch, kube_cluster, other_replicas=4)
    outcome = operations.scale(racing, spec, "out", 1)
    # At least the interposed write; the controller's status updates after it bump resourceVersion too.
    assert outcome.conflicts >= 1
    assert outcome.before.desired_replicas == 2
    assert outcome.after.desired_replicas == 5
    assert converge(orch, spec).ready_replicas == 5


class RacingPatch(KubernetesOrchestrator):
    """Another writer touches the Deployment right before our first patch goes out."""

    def __init__(self, base: KubernetesOrchestrator, kube_cluster: ControlPlane) -> None:
        super().__init__(base.api_client)
        self.kube_cluster = kube_cluster
        self.raced = 0

    def _patch(self, spec: WorkloadSpec, body: dict[str, Any], content_type: str) -> dict[str, Any]:
        if not self.raced:
            self.raced += 1
            self.kube_cluster.kubectl(
                "annotate", "deployment", spec.name, "-n", spec.kubernetes.namespace, "example.com/touched=yes"
            )
        return super()._patch(spec, body, content_type)

    def _server_side_apply(self, spec: WorkloadSpec, body: dict[str, Any]) -> dict[str, Any]:
        if not self.raced:
            self.raced += 1
            self.kube_cluster.kubectl(
                "annotate", "deployment", spec.name, "-n", spec.kubernetes.namespace, "example.com/touched=yes"
            )
        return super()._server_side_apply(spec, body)


def test_rollback_re_reads_on_409(
    kubernetes_target: TargetHarness, orch: KubernetesOrchestrator, kube_cluster: ControlPlane
) -> None:
    spec = deploy(kubernetes_target, replicas=1)
    orch.update_image(spec, IMAGE_V2, orch.read(spec).version)
    converge(orch, spec)
    # The rollback restores the planned revision's whole spec with a versioned apply; a 409 (another
    # writer in between) re-reads and renders that same spec again, it never picks another revision.
    racing = RacingPatch(orch, kube_cluster)
    state = roll_back(racing, spec)
    assert racing.raced == 1 and state.image == IMAGE_V1
    assert converge(orch, spec).image == IMAGE_V1


def test_concurrent_scale_outs_are_not_lost(kubernetes_target: TargetHarness, orch: KubernetesOrchestrator) -> None:
    spec = deploy(kubernetes_target, replicas=1)
    barrier = threading.Barrier(2)
    outcomes: list[operations.WriteOutcome] = []
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            barrier.wait(timeout=10)
            outcomes.append(operations.scale(orch, spec, "out", 1))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=writer) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert sorted(o.after.desired_replicas for o in outcomes) == [2, 3]
    assert converge(orch, spec).desired_replicas == 3


# ------------------------------------------------------------------ StatefulSets


def test_statefulset_apply_scale_update_rollback_remove(
    kubernetes_target: TargetHarness, orch: KubernetesOrchestrator, kube_cluster: ControlPlane
) -> None:
    spec = variant(kubernetes_target, kubernetes_target.make_spec(replicas=2), kind="StatefulSet")
    ns = spec.kubernetes.namespace
    state = orch.apply(spec)
    assert (state.desired_replicas, state.image, state.revision) == (2, IMAGE_V1, 1)
    assert converge(orch, spec).ready_replicas == 2
    svc = json.loads(kube_cluster.kubectl("get", "service", spec.name, "-n", ns, "-o", "json").stdout)
    assert svc["spec"]["clusterIP"] == "None"
    sts = json.loads(kube_cluster.kubectl("get", "statefulset", spec.name, "-n", ns, "-o", "json").stdout)
    assert sts["spec"]["serviceName"] == spec.name
    assert orch.apply(spec).version == orch.read(spec).version  # idempotent

    seen = orch.read(spec).version
    up = orch.set_replicas(spec, 3, seen)
    assert up.desired_replicas == 3
    assert converge(orch, spec).ready_replicas == 3
    listed = orch.replicas(spec)  # the StatefulSet's pods by its selector, named by ordinal
    assert [(r.id, r.ready, r.pending) for r in listed] == [(f"{spec.name}-{i}", True, False) for i in range(3)]
    with pytest.raises(ConflictError):  # the version our own write moved past is stale (whatever status did)
        orch.set_replicas(spec, 1, seen)

    before = orch.read(spec)
    updated = orch.update_image(spec, IMAGE_V2, before.version)
    assert (updated.image, updated.revision) == (IMAGE_V2, 2)
    final = converge(orch, spec, timeout_s=90)
    assert (final.image, final.updated_replicas, final.ready_replicas) == (IMAGE_V2, 3, 3)
    assert {p["spec"]["containers"][0]["image"] for p in pods(kube_cluster, spec)} == {IMAGE_V2}
    orch.update_image(spec, IMAGE_V3, final.version)
    converge(orch, spec, timeout_s=90)
    assert [(r.number, r.image) for r in orch.revisions(spec)] == [(1, IMAGE_V1), (2, IMAGE_V2), (3, IMAGE_V3)]

    back = roll_back(orch, spec, to_revision=1)
    assert (back.image, back.revision) == (IMAGE_V1, 4)
    assert converge(orch, spec, timeout_s=90).image == IMAGE_V1
    with pytest.raises(PermanentError, match="would change nothing"):  # already on revision 1's spec
        roll_back(orch, spec, to_revision=1)
    with pytest.raises(PermanentError, match="unknown revision 9"):
        roll_back(orch, spec, to_revision=9)

    orch.remove(spec)
    orch.remove(spec)
    assert not orch.exists(spec)
    assert kube_cluster.kubectl("get", "service", spec.name, "-n", ns, check=False).returncode != 0


# ------------------------------------------------------------------ foreign scalers


def test_hpa_owner_is_not_fought_unless_allowed(
    kubernetes_target: TargetHarness, orch: KubernetesOrchestrator, kube_cluster: ControlPlane
) -> None:
    from kubernetes import client

    spec = deploy(kubernetes_target, replicas=1)
    ns = spec.kubernetes.namespace
    autoscaling: Any = client.AutoscalingV2Api(kube_cluster.api_client())
    autoscaling.create_namespaced_horizontal_pod_autoscaler(
        ns,
        {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web-hpa"},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": spec.name},
                "minReplicas": 1,
                "maxReplicas": 5,
                "metrics": [
                    {
                        "type": "Resource",
                        "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}},
                    }
                ],
            },
        },
    )
    state = orch.read(spec)
    with pytest.raises(OwnershipError, match=f"HorizontalPodAutoscaler {ns}/web-hpa"):
        orch.set_replicas(spec, 3, state.version)
    with pytest.raises(OwnershipError, match="allow_foreign_scaler"):
        operations.scale(orch, spec, "absolute", 3)
    with pytest.raises(OwnershipError):
        orch.apply(spec, replicas=3)
    assert orch.read(spec).desired_replicas == 1
    # Image updates and a plain re-apply do not touch the replica count: allowed.
    orch.update_image(spec, IMAGE_V2, orch.read(spec).version)
    assert converge(orch, spec).image == IMAGE_V2
    assert orch.apply(spec).desired_replicas == 1

    allowed = variant(kubernetes_target, spec, allow_foreign_scaler=True)
    outcome = operations.scale(orch, allowed, "absolute", 3)
    assert outcome.after.desired_replicas == 3


# ------------------------------------------------------------------ failures


def test_apiserver_restart_mid_rollout_is_survived(
    kubernetes_target: TargetHarness, orch: KubernetesOrchestrator, kube_cluster: ControlPlane
) -> None:
    # A roomy progress deadline: this test is about the outage, not about deadlines.
    spec = variant(kubernetes_target, kubernetes_target.make_spec(replicas=2), progress_deadline=120)
    orch.apply(spec)
    converge(orch, spec)
    ns = spec.kubernetes.namespace
    # Pause the Deployment so the rollout cannot finish before the restart (resumed afterwards).
    kube_cluster.kubectl("rollout", "pause", "deployment", spec.name, "-n", ns)
    read_failures: list[TransientError] = []
    done: list[object] = []

    class Counting(KubernetesOrchestrator):
        def read(self, spec: WorkloadSpec) -> WorkloadState:
            try:
                return super().read(spec)
            except TransientError as exc:
                read_failures.append(exc)
                raise

    counting = Counting(orch.api_client, timeout_s=10)

    def rollout() -> None:
        try:
            done.append(operations.rolling_update(counting, spec, IMAGE_V2, timeout_s=120))
        except BaseException as exc:
            done.append(exc)

    worker = threading.Thread(target=rollout)
    worker.start()
    deadline = time.monotonic() + 20
    while orch.read(spec).image != IMAGE_V2:
        assert time.monotonic() < deadline, "the image update was not written"
        time.sleep(0.1)

    during: list[BaseException] = []

    def poke() -> None:  # a write attempted during the outage is a TransientError for the caller's retry
        end = time.monotonic() + 20
        while time.monotonic() < end:
            try:
                orch.set_replicas(spec, 3, "0")
            except ConflictError:  # the apiserver still answered (stale "0" refused): try again
                time.sleep(0.2)
            except BaseException as exc:
                during.append(exc)
                return

    poker = threading.Thread(target=poke)
    poker.start()
    kube_cluster.restart_apiserver(downtime=4, grace=2)
    poker.join(timeout=60)
    kube_cluster.kubectl("rollout", "resume", "deployment", spec.name, "-n", ns)
    worker.join(timeout=150)
    assert done, "the rollout did not finish"
    assert not isinstance(done[0], BaseException), done[0]
    assert read_failures, "the wait never saw the outage"
    assert during and isinstance(during[0], TransientError), during
    final = orch.read(spec)
    assert (final.image, final.ready_replicas, final.updated_replicas) == (IMAGE_V2, 2, 2)


def test_unreachable_apiserver_is_transient_and_bad_values_are_permanent(
    kubernetes_target: TargetHarness, orch: KubernetesOrchestrator, kube_cluster: ControlPlane, tmp_path: Path
) -> None:
    cfg = json.loads(kube_cluster.kubeconfig.read_text())
    cfg["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{free_port()}"
    dead = tmp_path / "kubeconfig"
    dead.write_text(json.dumps(cfg))
    spec = kubernetes_target.make_spec()
    offline = KubernetesOrchestrator.from_kubeconfig(dead, timeout_s=5)
    try:
        with pytest.raises(TransientError, match="unreachable"):
            offline.read(spec)
    finally:
        offline.close()
    bad = spec.model_copy(update={"labels": {"team": "not a valid label value"}})
    with pytest.raises(PermanentError, match=r"(?i)invalid") as exc:
        orch.apply(bad)
    assert not isinstance(exc.value, TransientError)
    assert not orch.exists(spec)


# ------------------------------------------------------------------ Prefect flows


@pytest.fixture
def kube_workload(
    kube_cluster: ControlPlane, prefect_server: LocalServer, workloads_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, str]]:
    namespace = kube_cluster.new_namespace("flows")
    name = unique_name("flow")
    doc = {
        "name": name,
        "target": "kubernetes",
        "image": IMAGE_V1,
        "replicas": {"min": 1, "max": 5, "initial": 2},
        "update": {"max_surge": 1, "max_unavailable": 0, "timeout": "60s"},
        "kubernetes": {"namespace": namespace, "progress_deadline": "30s"},
    }
    (workloads_dir / f"{name}.yaml").write_text(yaml.safe_dump(doc))
    monkeypatch.setenv("KUBECONFIG", str(kube_cluster.kubeconfig))
    orchestrators.reset()
    try:
        yield name, namespace
    finally:
        orchestrators.reset()
        kube_cluster.delete_namespace(namespace)


def test_prefect_flows_scale_and_roll_out_on_kubernetes(
    kube_workload: tuple[str, str], kube_cluster: ControlPlane
) -> None:
    from flows.deploy import deploy as deploy_flow
    from flows.rolling_update import rolling_update
    from flows.scale import scale

    name, namespace = kube_workload
    deploy_flow(workload=name)
    rec = scale(workload=name, replicas=4, reason="kube flow test")
    assert (rec.before.replicas, rec.after.replicas) == (2, 4)
    upd = rolling_update(workload=name, image=IMAGE_V2)
    assert (upd.before.image, upd.after.image) == (IMAGE_V1, IMAGE_V2)
    assert upd.before.revision is not None
    assert upd.after.revision == upd.before.revision + 1
    live = json.loads(kube_cluster.kubectl("get", "deployment", name, "-n", namespace, "-o", "json").stdout)
    assert live["spec"]["replicas"] == 4
    assert live["spec"]["template"]["spec"]["containers"][0]["image"] == IMAGE_V2
    assert live["status"]["readyReplicas"] == 4
    with pytest.raises(RolloutFailed):
        rolling_update(workload=name, image=IMAGE_NEVER_READY, timeout_s=60)
    live = json.loads(kube_cluster.kubectl("get", "deployment", name, "-n", namespace, "-o", "json").stdout)
    assert live["spec"]["template"]["spec"]["containers"][0]["image"] == IMAGE_V2
