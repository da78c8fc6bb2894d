"""The canary part of the orchestrator protocol (``read_canary``, ``set_canary``, ``promote_canary``,
``abort_canary``), run against the in-memory fake (fast tier), the plain Docker engine, Swarm and
Kubernetes (a ``<name>-canary`` Deployment; StatefulSets refuse a canary naming the target and kind).
While a canary is set, aborted or promoted the stable never drops below its desired ready count
(sampled from another thread while the calls run)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import docker
import pytest

from scalewise.errors import CanaryFailed, PermanentError
from scalewise.model import WorkloadState
from scalewise.orchestrators.base import Orchestrator
from scalewise.orchestrators.kube import LABEL_NAME, canary_name
from scalewise.orchestrators.swarm import canary_service_name
from scalewise.spec import WorkloadSpec
from tests.support.docker_env import IMAGE_V1, IMAGE_V2, IMAGE_V3, unique_name
from tests.support.kube import ControlPlane
from tests.support.procs import wait_until
from tests.support.targets import TEST_SPEC_LABEL, TargetHarness, docker_cli

TARGETS = ["fake", "docker", "swarm", "kubernetes"]
WAIT_S = 90.0


@pytest.fixture(params=TARGETS)
def target(request: pytest.FixtureRequest) -> TargetHarness:
    harness: TargetHarness = request.getfixturevalue(f"{request.param}_target")
    return harness


def roomy(spec: WorkloadSpec) -> WorkloadSpec:
    """The harness' spec with a health check that rides out a loaded 2-core machine (a 1 s check
    timing out twice in a row there is load, not a bad canary)."""
    if spec.healthcheck is None:
        return spec
    check = spec.healthcheck.model_copy(update={"timeout": 5.0, "retries": 3})
    return spec.model_copy(update={"healthcheck": check})


def deployed(orch: Orchestrator, spec: WorkloadSpec) -> WorkloadState:
    orch.apply(spec)
    result = orch.wait_converged(spec, timeout_s=WAIT_S, poll_s=0.5)
    assert result.converged, result
    return result.state


@contextmanager
def stable_sampled(orch: Orchestrator, spec: WorkloadSpec) -> Iterator[list[tuple[int, int]]]:
    """Sample the stable's (ready, desired) every 0.2 s while the block runs (one sample before it),
    then assert it never dropped below its desired ready count."""
    samples: list[tuple[int, int]] = []
    stop = threading.Event()

    def sample() -> None:
        state = orch.read(spec)
        samples.append((state.ready_replicas, state.desired_replicas))

    def run() -> None:
        while not stop.wait(0.2):
            sample()

    sample()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        stop.set()
        thread.join(30)
    assert all(ready >= desired for ready, desired in samples), samples


def steady(state: WorkloadState) -> tuple[int, int, str, int, str]:
    """What a canary must never change about the stable."""
    return state.desired_replicas, state.ready_replicas, state.image, state.revision, state.version


def test_weight_is_a_replica_ratio_beside_an_untouched_stable_and_promote_rolls_the_stable(
    target: TargetHarness,
) -> None:
    orch, spec = target.orchestrator, roomy(target.make_spec(replicas=3))
    before = deployed(orch, spec)
    assert orch.read_canary(spec) is None

    with stable_sampled(orch, spec):
        first = orch.set_canary(spec, spec.with_image(IMAGE_V2), 20)
    assert (first.image, first.weight, first.desired_replicas, first.ready_replicas) == (IMAGE_V2, 20, 1, 1)
    assert first.template is not None and first.template["image"] == IMAGE_V2
    assert steady(orch.read(spec)) == steady(before)  # counts, revision and version ignore the canary
    assert [r.image for r in orch.revisions(spec)] == [IMAGE_V1]

    again = orch.set_canary(spec, spec.with_image(IMAGE_V2), 20)  # repeatable
    assert again.desired_replicas == 1
    wider = orch.set_canary(spec, spec.with_image(IMAGE_V2), 50)
    assert (wider.desired_replicas, wider.ready_replicas) == (2, 2)  # ceil(50% of 3)
    assert steady(orch.read(spec)) == steady(before)

    with stable_sampled(orch, spec):  # the promote is a start-first rolling update
        after = orch.promote_canary(spec)
    assert (after.image, after.revision, after.desired_replicas) == (IMAGE_V2, before.revision + 1, 3)
    assert orch.read_canary(spec) is None
    assert [r.image for r in orch.revisions(spec)][-1] == IMAGE_V2
    settled = orch.wait_converged(spec, timeout_s=WAIT_S, poll_s=0.5)
    assert settled.converged and settled.state.ready_replicas == 3
    with pytest.raises(PermanentError, match="no canary to promote"):
        orch.promote_canary(spec)


def test_abort_removes_the_canary_and_leaves_the_stable_as_it_was(target: TargetHarness) -> None:
    orch, spec = target.orchestrator, roomy(target.make_spec(replicas=2))
    before = deployed(orch, spec)
    with stable_sampled(orch, spec):
        orch.set_canary(spec, spec.with_image(IMAGE_V2), 50)
        with pytest.raises(PermanentError, match="promote or abort it first"):
            orch.set_canary(spec, spec.with_image(IMAGE_V3), 50)  # one canary at a time
        after = orch.abort_canary(spec)
    assert orch.read_canary(spec) is None
    assert steady(after) == steady(before)
    assert [r.image for r in orch.revisions(spec)] == [IMAGE_V1]
    assert steady(orch.abort_canary(spec)) == steady(before)  # nothing left: a no-op


def test_a_canary_that_never_becomes_ready_fails_and_stays_until_aborted(target: TargetHarness) -> None:
    orch, spec = target.orchestrator, roomy(target.make_spec(replicas=2, timeout=30))
    before = deployed(orch, spec)
    with stable_sampled(orch, spec):
        with pytest.raises(CanaryFailed, match=target.broken_image):
            orch.set_canary(spec, spec.with_image(target.broken_image), 10)
        left = orch.read_canary(spec)
        assert left is not None and left.ready_replicas == 0
        assert orch.read(spec).ready_replicas == before.desired_replicas
        assert steady(orch.abort_canary(spec))[:4] == steady(before)[:4]
    assert orch.read_canary(spec) is None


def test_the_stable_scales_while_a_canary_runs_and_the_next_weight_follows(target: TargetHarness) -> None:
    orch, spec = target.orchestrator, roomy(target.make_spec(replicas=2))
    before = deployed(orch, spec)
    orch.set_canary(spec, spec.with_image(IMAGE_V2), 50)
    scaled = orch.set_replicas(spec, 4, before.version)  # the autoscaler's write: the canary is no conflict
    assert scaled.desired_replicas == 4
    canary = orch.read_canary(spec)
    assert canary is not None and canary.desired_replicas == 1
    assert orch.set_canary(spec, spec.with_image(IMAGE_V2), 50).desired_replicas == 2  # ceil(50% of 4)
    orch.abort_canary(spec)


def test_engine_canary_containers_share_the_stable_labels_and_are_marked(docker_target: TargetHarness) -> None:
    orch, spec = docker_target.orchestrator, roomy(docker_target.make_spec(replicas=2))
    deployed(orch, spec)
    orch.set_canary(spec, spec.with_image(IMAGE_V2), 50)
    listed = docker_cli("ps", "-q", "--filter", f"label=scalewise.workload={spec.name}",
                        "--filter", f"label={TEST_SPEC_LABEL}=1")
    labels = [json.loads(docker_cli("inspect", "-f", "{{json .Config.Labels}}", cid).stdout)
              for cid in listed.stdout.split()]
    roles = sorted(item["scalewise.role"] for item in labels)
    assert roles == ["canary", "replica", "replica"]
    canary = next(item for item in labels if item["scalewise.role"] == "canary")
    assert canary["scalewise.image"] == IMAGE_V2 and canary["scalewise.canary-weight"] == "50"
    orch.abort_canary(spec)


def orch_service_id(client: docker.DockerClient, name: str) -> str:
    return str(client.api.inspect_service(name)["ID"])


def task_ips(client: docker.DockerClient, service_id: str, network_id: str) -> set[str]:
    """The addresses on ``network_id`` of the running tasks of one service (by id: a name filter
    would also match the ``-canary`` service)."""
    tasks = client.api.tasks(filters={"service": service_id, "desired-state": "running"})
    return {
        address.split("/")[0]
        for task in tasks
        if task.get("ServiceID") == service_id
        for attachment in task.get("NetworksAttachments") or []
        if attachment["Network"]["ID"] == network_id
        for address in attachment.get("Addresses") or []
    }


def resolved(network: str, name: str) -> set[str]:
    """The addresses Docker's embedded DNS gives ``name``, asked from a container on ``network``."""
    out = docker_cli(
        "run", "--rm", "--network", network, IMAGE_V1, "sh", "-c", f"nslookup {name} 127.0.0.11", timeout=60
    )
    answers = out.stdout.split("Non-authoritative answer:", 1)[-1] if out.returncode == 0 else ""
    return {line.split(":", 1)[1].strip() for line in answers.splitlines() if line.startswith("Address:")}


def test_kubernetes_canary_is_a_second_deployment_whose_pods_carry_the_stable_labels(
    kubernetes_target: TargetHarness, kube_cluster: ControlPlane
) -> None:
    orch, spec = kubernetes_target.orchestrator, roomy(kubernetes_target.make_spec(replicas=2))
    before = deployed(orch, spec)
    orch.set_canary(spec, spec.with_image(IMAGE_V2), 50)
    ns = spec.kubernetes.namespace
    # What a Service selecting the stable's pods (app.kubernetes.io/name) balances over: both.
    out = kube_cluster.kubectl("get", "pods", "-n", ns, "-l", f"{LABEL_NAME}={spec.name}", "-o", "json")
    pods = [p for p in json.loads(out.stdout)["items"] if not p["metadata"].get("deletionTimestamp")]
    roles = sorted(p["metadata"]["labels"].get("scalewise.io/role", "stable") for p in pods)
    assert roles == ["canary", "stable", "stable"], roles
    made = json.loads(kube_cluster.kubectl("get", "deployment", "-n", ns, canary_name(spec.name), "-o", "json").stdout)
    assert made["spec"]["selector"]["matchLabels"] == {LABEL_NAME: spec.name, "scalewise.io/role": "canary"}
    assert made["metadata"]["annotations"]["scalewise.io/canary-weight"] == "50"
    assert len(orch.replicas(spec)) == 2  # the stable's replicas never list the canary's pods
    assert steady(orch.read(spec)) == steady(before)
    orch.remove(spec)  # the workload's canary goes with it
    cname = canary_name(spec.name)
    wait_until(lambda: kube_cluster.kubectl("get", "deployment", "-n", ns, cname, check=False).returncode != 0,
               "the canary deployment to be deleted with its workload", timeout_s=WAIT_S)


def test_a_kubernetes_statefulset_refuses_a_canary_naming_the_target_and_kind(
    kubernetes_target: TargetHarness,
) -> None:
    spec = kubernetes_target.make_spec(replicas=1)
    spec = spec.model_copy(update={"kubernetes": spec.kubernetes.model_copy(update={"kind": "StatefulSet"})})
    orch = kubernetes_target.orchestrator
    assert orch.read_canary(spec) is None
    for call in (lambda: orch.set_canary(spec, spec.with_image(IMAGE_V2), 20), lambda: orch.promote_canary(spec)):
        with pytest.raises(PermanentError, match="not supported for kind StatefulSet on target kubernetes"):
            call()


def test_swarm_canary_is_a_marked_service_sharing_the_stable_alias_labels_and_networks(
    swarm_target: TargetHarness,
) -> None:
    orch, spec = swarm_target.orchestrator, roomy(swarm_target.make_spec(replicas=2))
    network = unique_name("swnet")
    made = docker_cli("network", "create", "--driver", "overlay", "--attachable", network)
    assert made.returncode == 0, made.stderr
    try:
        deployed(orch, spec)
        added = docker_cli("service", "update", "--detach", "--network-add", network, spec.name, timeout=60)
        assert added.returncode == 0, added.stderr
        # --detach: Swarm starts that update a moment later, and its "updating" then "completed" bump the
        # service's version. The tasks count as current throughout (the network is not in ContainerSpec),
        # so a convergence wait can return before the update begins (ci23: 3293 read, then 3295): wait
        # for the update to complete before taking the version the canary must leave alone.
        wait_until(lambda: orch.read(spec).update_state == "completed", "the network update to complete", WAIT_S)
        assert orch.wait_converged(spec, timeout_s=WAIT_S, poll_s=0.5).converged
        before = orch.read(spec)
        orch.set_canary(spec, spec.with_image(IMAGE_V2), 50)
        assert steady(orch.read(spec)) == steady(before)

        client = docker.from_env(timeout=30)
        try:
            canary = client.api.inspect_service(canary_service_name(spec.name))
            labels = canary["Spec"]["Labels"]
            assert labels["scalewise.workload"] == spec.name and labels[TEST_SPEC_LABEL] == "1"
            assert labels["scalewise.role"] == "canary" and labels["scalewise.canary-weight"] == "50"
            template = canary["Spec"]["TaskTemplate"]
            assert template["ContainerSpec"]["Labels"]["scalewise.role"] == "canary"
            attached = {(n["Target"], tuple(n.get("Aliases") or [])) for n in template["Networks"]}
            network_id = client.networks.get(network).id
            assert attached == {(network_id, (spec.name,))}

            # Round-robin DNS over every task of the name (``tasks.<name>``) answers the stable's
            # and the canary's tasks alike: the traffic share is the replica ratio.
            stable_ips = task_ips(client, orch_service_id(client, spec.name), network_id)
            canary_ips = task_ips(client, canary["ID"], network_id)
            assert len(stable_ips) == 2 and len(canary_ips) == 1, (stable_ips, canary_ips)
            wait_until(
                lambda: resolved(network, f"tasks.{spec.name}") == stable_ips | canary_ips,
                f"tasks.{spec.name} to resolve to the stable's {sorted(stable_ips)} and the canary's"
                f" {sorted(canary_ips)}",
                timeout_s=WAIT_S,
            )

        finally:
            client.close()
        orch.abort_canary(spec)
        assert orch.read_canary(spec) is None
        assert steady(orch.read(spec)) == steady(before)
    finally:
        swarm_target.cleanup()
        docker_cli("network", "rm", network)
