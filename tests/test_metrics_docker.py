"""DockerCpuSource against the real engine: labelled containers and Swarm tasks."""

from __future__ import annotations

import time

import docker
import pytest

from scalewise.metrics.base import WorkloadRef
from scalewise.metrics.docker_stats import DockerCpuSource, cpu_percent
from scalewise.policy.config import MetricTarget
from tests.support.docker_env import IMAGE_V1, TEST_LABEL, unique_name

pytestmark = pytest.mark.docker

CPU = MetricTarget(name="cpu", source="docker_cpu", type="utilization", target=50)
BUSY = ["/bin/sh", "-c", "while :; do :; done"]


def cpu_used_s(container: docker.models.containers.Container) -> float:
    """CPU seconds the container has used so far, from the engine's own counters."""
    stats = container.stats(stream=False, one_shot=True)
    return float(stats["cpu_stats"]["cpu_usage"]["total_usage"]) / 1e9


@pytest.fixture
def client(docker_engine):
    c = docker.from_env()
    yield c
    c.close()


def test_cpu_percent_of_a_running_workload(client):
    name = unique_name("cpu")
    labels = {"scalewise.workload": name, TEST_LABEL: "1"}
    busy = client.containers.run(IMAGE_V1, BUSY, detach=True, labels=labels, name=f"{name}-busy")
    idle = client.containers.run(IMAGE_V1, detach=True, labels=labels, name=f"{name}-idle")
    anchor = client.containers.create(
        IMAGE_V1, labels={**labels, "scalewise.role": "anchor"}, name=f"{name}-a"
    )
    try:
        src = DockerCpuSource(interval=0.5)
        used_before, t_before = cpu_used_s(busy), time.monotonic()
        r = src.read(CPU, WorkloadRef(name))
        used_pct = 100 * (cpu_used_s(busy) - used_before) / (time.monotonic() - t_before)
        assert r.ok and r.values is not None, r
        assert set(r.values) == {f"{name}-busy", f"{name}-idle"}  # the never-started anchor is not a replica
        assert all(v >= 0 for v in r.values.values())
        # A busy loop burns what the machine gives it: most of a core when quiet, a few percent on a
        # loaded 2-core machine. The source's figure must match the CPU the container was measured
        # (by the engine's own counters) to have used around the read, and exceed the idle one's.
        assert used_pct > 1, used_pct
        assert r.values[f"{name}-busy"] > used_pct / 4, (r.values, used_pct)
        assert r.values[f"{name}-busy"] > r.values[f"{name}-idle"]
    finally:
        for c in (busy, idle, anchor):
            c.remove(force=True)


def test_unknown_workload_is_a_failed_read(docker_engine):
    src = DockerCpuSource(interval=0.1)
    r = src.read(CPU, WorkloadRef(unique_name("nothing")))
    assert not r.ok and r.error == "no_replicas" and r.values is None
    bad = src.read(CPU, WorkloadRef('x" or 1'))
    assert not bad.ok and bad.error == "bad_query"


def test_swarm_service_tasks(client):
    name = unique_name("svc")
    svc = client.services.create(IMAGE_V1, name=name, labels={TEST_LABEL: "1"})
    try:
        deadline = time.monotonic() + 60
        src = DockerCpuSource(interval=0.3)
        r = src.read(CPU, WorkloadRef(name, target="swarm"))
        while not r.ok and time.monotonic() < deadline:
            time.sleep(0.5)
            r = src.read(CPU, WorkloadRef(name, target="swarm"))
        assert r.ok and r.values and all(v >= 0 for v in r.values.values()), r
        assert all(k.startswith(f"{name}.1.") for k in r.values)
    finally:
        svc.remove()


def test_cpu_percent_formula():
    a = {"cpu_stats": {"cpu_usage": {"total_usage": 1_000}, "system_cpu_usage": 10_000, "online_cpus": 4}}
    b = {"cpu_stats": {"cpu_usage": {"total_usage": 3_000}, "system_cpu_usage": 20_000, "online_cpus": 4}}
    assert cpu_percent(a, b) == pytest.approx(80.0)  # 2000/10000 * 4 * 100
    assert cpu_percent(b, a) is None  # no forward progress: not comparable
    assert cpu_percent({}, b) is None
