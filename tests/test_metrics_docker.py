"""DockerCpuSource against the real engine: the replicas an orchestrator lists (plain engine, Swarm)."""

from __future__ import annotations

import time

import docker
import pytest

from scalewise.metrics.base import WorkloadRef
from scalewise.metrics.docker_stats import DockerCpuSource, cpu_percent
from scalewise.policy.config import MetricTarget
from scalewise.policy.readings import ReplicaInfo
from scalewise.spec import WorkloadSpec
from tests.support.docker_env import IMAGE_V1, TEST_LABEL, unique_name
from tests.support.targets import TargetHarness

pytestmark = pytest.mark.docker

CPU = MetricTarget(name="cpu", source="docker_cpu", type="utilization", target=50)
BUSY = ["/bin/sh", "-c", "while :; do :; done"]
WAIT_S = 90.0


def cpu_used_s(container: docker.models.containers.Container) -> float:
    """CPU seconds the container has used so far, from the engine's own counters."""
    stats = container.stats(stream=False, one_shot=True)
    return float(stats["cpu_stats"]["cpu_usage"]["total_usage"]) / 1e9


@pytest.fixture
def client(docker_engine):
    c = docker.from_env()
    yield c
    c.close()


def test_cpu_percent_of_the_listed_replicas(client):
    name = unique_name("cpu")
    labels = {TEST_LABEL: "1"}
    busy = client.containers.run(IMAGE_V1, BUSY, detach=True, labels=labels, name=f"{name}-busy")
    idle = client.containers.run(IMAGE_V1, detach=True, labels=labels, name=f"{name}-idle")
    created = client.containers.create(IMAGE_V1, labels=labels, name=f"{name}-new")
    listing = (
        ReplicaInfo(id=f"{name}-busy", container_id=busy.id),
        ReplicaInfo(id=f"{name}-idle", container_id=idle.id),
        ReplicaInfo(id=f"{name}-new", ready=False, pending=True, container_id=created.id),
    )
    try:
        src = DockerCpuSource(interval=0.5)
        used_before, t_before = cpu_used_s(busy), time.monotonic()
        r = src.read(CPU, WorkloadRef(name, replicas=listing))
        used_pct = 100 * (cpu_used_s(busy) - used_before) / (time.monotonic() - t_before)
        assert r.ok and r.values is not None, r
        assert set(r.values) == {f"{name}-busy", f"{name}-idle"}  # the pending replica is not sampled
        assert all(v >= 0 for v in r.values.values())
        # A busy loop burns what the machine gives it: most of a core when quiet, a few percent on a
        # loaded 2-core machine. The source's figure must match the CPU the container was measured
        # (by the engine's own counters) to have used around the read, and exceed the idle one's.
        assert used_pct > 1, used_pct
        assert r.values[f"{name}-busy"] > used_pct / 4, (r.values, used_pct)
        assert r.values[f"{name}-busy"] > r.values[f"{name}-idle"]
    finally:
        for c in (busy, idle, created):
            c.remove(force=True)


def test_no_listing_or_no_started_replica_is_a_failed_read(docker_engine):
    src = DockerCpuSource(interval=0.1)
    name = unique_name("nothing")
    unlisted = src.read(CPU, WorkloadRef(name))
    assert not unlisted.ok and unlisted.error == "source" and "replica listing" in unlisted.detail, unlisted
    empty = src.read(CPU, WorkloadRef(name, replicas=()))
    assert not empty.ok and empty.error == "no_replicas" and empty.values is None
    pending = src.read(CPU, WorkloadRef(name, replicas=(ReplicaInfo(id="t", ready=False, pending=True),)))
    assert not pending.ok and pending.error == "no_replicas"
    bad = src.read(CPU, WorkloadRef('x" or 1', replicas=()))
    assert not bad.ok and bad.error == "bad_query"


def read_listed(harness: TargetHarness, replicas: int) -> tuple[WorkloadSpec, list[ReplicaInfo], dict[str, float]]:
    """Deploy through the adapter, then read CPU of the replicas it lists (until every one has a value)."""
    orch = harness.orchestrator
    spec = harness.make_spec(replicas=replicas)
    orch.apply(spec)
    result = orch.wait_converged(spec, timeout_s=WAIT_S, poll_s=0.5)
    assert result.converged, result
    src = DockerCpuSource(interval=0.3)
    deadline = time.monotonic() + WAIT_S
    while True:
        listing = orch.replicas(spec)
        r = src.read(CPU, WorkloadRef.of(spec, replicas=listing))
        if r.ok and r.values is not None and len(r.values) == replicas:
            return spec, listing, r.values
        assert time.monotonic() < deadline, (listing, r)
        time.sleep(0.5)


def names_of(client: docker.DockerClient, listing: list[ReplicaInfo]) -> list[tuple[str, str]]:
    """(id, the engine's name of its container) per listed replica: the ids must be the container names."""
    return [(r.id, client.containers.get(r.container_id).name) for r in listing if r.container_id]


def test_engine_workload_read_through_its_listing(docker_target: TargetHarness, client: docker.DockerClient) -> None:
    _, listing, values = read_listed(docker_target, 2)
    assert set(values) == {r.id for r in listing}
    named = names_of(client, listing)
    assert len(named) == 2 and all(a == b for a, b in named), named
    assert all(v >= 0 for v in values.values())


def test_swarm_tasks_read_through_their_listing(swarm_target: TargetHarness, client: docker.DockerClient) -> None:
    spec, listing, values = read_listed(swarm_target, 2)
    assert set(values) == {r.id for r in listing}
    named = names_of(client, listing)
    assert len(named) == 2 and all(a == b for a, b in named), named
    name = spec.name
    assert {k.rsplit(".", 1)[0] for k in values} == {f"{name}.1", f"{name}.2"}, values  # <service>.<slot>.<task>


def test_cpu_percent_formula():
    a = {"cpu_stats": {"cpu_usage": {"total_usage": 1_000}, "system_cpu_usage": 10_000, "online_cpus": 4}}
    b = {"cpu_stats": {"cpu_usage": {"total_usage": 3_000}, "system_cpu_usage": 20_000, "online_cpus": 4}}
    assert cpu_percent(a, b) == pytest.approx(80.0)  # 2000/10000 * 4 * 100
    assert cpu_percent(b, a) is None  # no forward progress: not comparable
    assert cpu_percent({}, b) is None
