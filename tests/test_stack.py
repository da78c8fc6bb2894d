"""The whole system as one stack: deployments/stack.yaml deployed on the single-node Swarm by
scripts/stack.sh (PostgreSQL, Redis, the Prefect server with prefect-redis, 2 process workers, 2 webhook
receivers, Prometheus, Alertmanager; every image built locally).

End to end: a real Prometheus rule fires, Alertmanager posts to the receiver service, a worker
container runs the scale-out flow, the Swarm service is scaled and `scalewise history` shows it with
trigger ``webhook:alertmanager``. Fault: the worker container running a rolling update is killed in
the middle of it. Each test run deploys a stack of its own (unique name, free ports) and removes it,
its volumes and its workloads' services afterwards. Waits are bounded and on conditions.
"""

from __future__ import annotations

import functools
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest
import yaml

from tests.support.docker_env import IMAGE_V1, IMAGE_V2, ROOT, health_check, unique_name
from tests.support.procs import wait_until

# `up` (and, when the test setup has not built them, the image builds) counts against the first test
pytestmark = [pytest.mark.swarm, pytest.mark.prefect, pytest.mark.prom, pytest.mark.timeout(2400)]

SCALEWISE = str(Path(sys.executable).with_name("scalewise"))
UP_TIMEOUT_S = 1800  # `up` builds the images when the test setup has not (cold: minutes on 2 loaded cores)
WAIT_S = 300  # a flow run starts a process in a worker container: tens of seconds on a loaded 2-core machine
ALERT = "ScalewiseStackE2E"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return int(s.getsockname()[1])


wait_for = functools.partial(wait_until, timeout_s=WAIT_S)


@dataclass
class Stack:
    name: str
    env: dict[str, str]
    workloads: Path
    etc: Path
    api: str
    prometheus: str
    services: list[str] = field(default_factory=list)  # workload services the tests created

    def scalewise(self, *args: str, timeout: float = WAIT_S) -> subprocess.CompletedProcess[str]:
        return subprocess.run([SCALEWISE, *args], env=self.env, cwd=ROOT, capture_output=True, text=True,
                              timeout=timeout)

    def add_workload(self, spec: dict[str, Any]) -> str:
        name = str(spec["name"])
        (self.workloads / f"{name}.yaml").write_text(yaml.safe_dump(spec))
        self.services.append(name)
        out = self.scalewise("deploy", name)
        assert out.returncode == 0, out.stdout + out.stderr
        return name

    def logs(self, *services: str) -> str:
        parts = []
        for svc in services:
            out = subprocess.run(["docker", "service", "logs", "--tail", "60", "--raw", f"{self.name}_{svc}"],
                                 capture_output=True, text=True, timeout=60)
            parts.append(f"--- {svc}\n{out.stdout[-6000:]}{out.stderr[-2000:]}")
        return "\n".join(parts)

    def flow_run(self, run_id: str) -> dict[str, Any]:
        resp = httpx.get(f"{self.api}/flow_runs/{run_id}", timeout=30)
        resp.raise_for_status()
        data: dict[str, Any] = resp.json()
        return data

    def quiet_schedules(self, deployment: str) -> None:
        """Turn off ``deployment``'s schedules (the server drops their future runs). None of these tests
        needs the 15 s autoscale schedule, and on process workers each of its runs is a new Python process
        (~3 s CPU of imports): under CPU stress they piled up 8 at once and starved the other tests."""
        dep = httpx.get(f"{self.api}/deployments/name/{deployment}", timeout=30)
        dep.raise_for_status()
        for sched in dep.json()["schedules"]:
            resp = httpx.patch(f"{self.api}/deployments/{dep.json()['id']}/schedules/{sched['id']}",
                               json={"active": False}, timeout=30)
            resp.raise_for_status()

    def start_run(self, deployment: str, parameters: dict[str, Any]) -> str:
        dep = httpx.get(f"{self.api}/deployments/name/{deployment}", timeout=30)
        dep.raise_for_status()
        run = httpx.post(f"{self.api}/deployments/{dep.json()['id']}/create_flow_run",
                         json={"parameters": parameters}, timeout=30)
        run.raise_for_status()
        return str(run.json()["id"])


def service(name: str) -> dict[str, Any]:
    client = docker.from_env()
    try:
        attrs: dict[str, Any] = client.services.get(name).attrs
        return attrs
    finally:
        client.close()


def replicas(name: str) -> int:
    return int(service(name)["Spec"]["Mode"]["Replicated"]["Replicas"])


def healthy(name: str) -> int | None:
    """Containers of the service that are running and pass their health check; None when the docker CLI
    failed (no answer is not zero replicas)."""
    out = subprocess.run(["docker", "ps", "-q", "--filter", f"label=com.docker.swarm.service.name={name}",
                          "--filter", "health=healthy"], capture_output=True, text=True, timeout=60)
    return len(out.stdout.split()) if out.returncode == 0 else None


def worker_of(stack: Stack, run_id: str, marker: str) -> str | None:
    """The id of the stack's worker container that runs flow run ``run_id``.

    Every worker that tried to claim the run names it in its log (the losers with "Aborted submission of
    flow run"), so the container must also show ``marker``, a line only the run's own process writes.
    """
    client = docker.from_env()
    try:
        for c in client.containers.list(filters={"label": f"com.docker.swarm.service.name={stack.name}_worker"}):
            text = c.logs(tail=4000).decode(errors="replace")
            if run_id in text and marker in text:
                return str(c.id)
        return None
    finally:
        client.close()


@pytest.fixture(scope="module")
def stack(docker_engine: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    name = unique_name("sws")
    home = Path(tmp_path_factory.mktemp("stack"))
    workloads = home / "workloads"
    workloads.mkdir()
    ports = {p: str(free_port()) for p in ("PREFECT", "PROMETHEUS", "ALERTMANAGER")}
    keep = ("SCALEWISE_IMAGE", "SCALEWISE_CACHE")  # which scalewise image to build/use, and its cache
    env = {k: v for k, v in os.environ.items() if k in keep or not k.startswith(("PREFECT_", "SCALEWISE_"))}
    env.update({
        "SCALEWISE_STACK": name, "SCALEWISE_STATE": str(home / "state"), "SCALEWISE_WORKLOADS": str(workloads),
        "SCALEWISE_STACK_TIMEOUT": "1500", **{f"STACK_{p}_PORT": v for p, v in ports.items()},
        "COLUMNS": "400",  # tables (scalewise history) unabridged
    })
    created = Stack(name, env, workloads, home / "state" / "stack" / name / "etc",
                    f"http://127.0.0.1:{ports['PREFECT']}/api", f"http://127.0.0.1:{ports['PROMETHEUS']}")
    try:
        up = subprocess.run(["bash", "scripts/stack.sh", "up"], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=UP_TIMEOUT_S)
        assert up.returncode == 0, up.stdout + up.stderr + created.logs("prefect-server", "setup", "worker")
        env["PREFECT_API_URL"] = created.api
        created.quiet_schedules("autoscale/scalewise")
        yield created
    finally:
        down = subprocess.run(["bash", "scripts/stack.sh", "down", "--volumes"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=900)
        client = docker.from_env()
        for svc in created.services:
            for s in client.services.list(filters={"name": svc}):
                s.remove()
        client.close()
        assert down.returncode == 0, down.stdout + down.stderr


def test_stack_serves_the_cli(stack: Stack) -> None:
    status = subprocess.run(["bash", "scripts/stack.sh", "status"], cwd=ROOT, env=stack.env, capture_output=True,
                            text=True, timeout=120)
    assert status.returncode == 0, status.stderr
    for svc in ("postgres", "redis", "prefect-server", "worker", "webhook", "prometheus", "alertmanager"):
        assert f"{stack.name}_{svc}" in status.stdout
    assert "2/2" in status.stdout  # workers and receivers
    out = stack.scalewise("history", "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    assert json.loads(out.stdout) == []  # a fresh stack: an empty history, from the stack's server


def test_alert_fires_and_a_worker_scales_the_swarm_service(stack: Stack) -> None:
    name = stack.add_workload({
        "name": unique_name("stk"), "target": "swarm", "image": IMAGE_V1,
        # a check that rides out a loaded machine (ci12 under stress-ng: 1 s checks timed out twice in a
        # row and Swarm counted 0 healthy replicas of a service that was serving)
        "healthcheck": health_check(timeout_s=5, retries=3),
        "replicas": {"min": 1, "max": 4, "initial": 1},
        "update": {"parallelism": 1, "order": "start-first", "monitor": "2s", "timeout": "60s"},
        "stop_grace_period": "1s",
    })
    assert replicas(name) == 1

    def logs() -> str:
        return stack.logs("webhook", "worker", "alertmanager", "prometheus")

    # A real rule on what Prometheus scrapes in the stack (both receiver replicas are up), labelled with
    # the workload; reloaded into the running Prometheus.
    (stack.etc / "rules.yml").write_text(yaml.safe_dump({"groups": [{"name": "e2e", "interval": "1s", "rules": [{
        "alert": ALERT, "expr": 'sum(up{job="scalewise-webhook"}) >= 2', "for": "0s",
        "labels": {"workload": name}, "annotations": {"summary": f"{name}: stack e2e load"},
    }]}]}))
    httpx.post(f"{stack.prometheus}/-/reload", timeout=30).raise_for_status()

    wait_for(lambda: replicas(name) == 2, "the alert to scale the service out to 2", logs=logs)

    def recorded() -> Any:
        out = stack.scalewise("history", name, "--json")
        assert out.returncode == 0, out.stdout + out.stderr
        return next((r for r in json.loads(out.stdout)
                     if r["operation"] == "scale-out" and r["outcome"] != "in_progress"), None)

    record = wait_for(recorded, "the finished scale-out record", logs=logs)
    assert record["outcome"] == "succeeded"
    assert (record["before"]["replicas"], record["after"]["replicas"]) == (1, 2)
    assert record["trigger"]["kind"] == "webhook" and record["trigger"]["actor"] == "alertmanager"
    table = stack.scalewise("history", name)
    assert table.returncode == 0 and "webhook:alertmanager" in table.stdout, table.stdout + table.stderr

    # The flow ran in a worker container of the stack, from the stack's work pool.
    run_id = record["run_url"].rstrip("/").rsplit("/", 1)[-1]
    assert stack.flow_run(run_id)["work_pool_name"] == "scalewise"
    assert worker_of(stack, run_id, f"recorded scale-out of {name} by") is not None, logs()


class ReadyWatch:
    """Samples the healthy replicas of a service until stopped; keeps the lowest count seen."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.lowest: int | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop.is_set():
            n = healthy(self.name)
            if n is not None:
                self.lowest = n if self.lowest is None else min(self.lowest, n)
            self.stop.wait(0.3)

    def __enter__(self) -> ReadyWatch:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=30)


def test_killing_the_worker_in_a_rolling_update(stack: Stack) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from tasks.locking import LEASE_S, workload_lock

    name = stack.add_workload({
        "name": unique_name("stf"), "target": "swarm", "image": IMAGE_V1,
        # a check that rides out a loaded machine (ci12 under stress-ng: 1 s checks timed out twice in a
        # row and Swarm counted 0 healthy replicas of a service that was serving)
        "healthcheck": health_check(timeout_s=5, retries=3),
        "replicas": {"min": 2, "max": 4, "initial": 2},
        # slow enough to be interrupted: each replica is replaced start-first, then watched 4 s
        "update": {"parallelism": 1, "order": "start-first", "monitor": "4s", "delay": "4s", "timeout": "180s",
                   "failure_action": "rollback"},
        "stop_grace_period": "1s",
    })
    wait_for(lambda: healthy(name) == 2, "2 healthy replicas before the update")

    def logs() -> str:
        return stack.logs("worker")

    with ReadyWatch(name) as watch:
        run_id = stack.start_run("rolling-update/scalewise",
                                 {"workload": name, "image": IMAGE_V2, "reason": "stack fault test"})

        def updating() -> Any:  # the run is running on a worker and Swarm is replacing replicas
            run = stack.flow_run(run_id)
            state = (service(name).get("UpdateStatus") or {}).get("State")
            return run if run["state_type"] == "RUNNING" and state == "updating" else None

        wait_for(updating, "the rolling update to be under way on a worker", logs=logs)
        marker = f"recorded rolling-update of {name} by"  # the run's own first log line
        container = wait_for(lambda: worker_of(stack, run_id, marker), "the worker container that runs it", logs=logs)
        subprocess.run(["docker", "kill", container], check=True, capture_output=True, timeout=60)

        # The workload lock is free within its lease (taken over from the dead holder, or released).
        with temporary_settings({PREFECT_API_URL: stack.api}), workload_lock(name, timeout_s=LEASE_S):
            pass

        # Swarm finishes (or rolls back) the update on its own: never fewer healthy replicas than 2.
        final = wait_for(lambda: (service(name).get("UpdateStatus") or {}).get("State")
                         in ("completed", "rollback_completed") and healthy(name) == 2 and service(name),
                         "the update to complete or roll back")
    assert watch.lowest is not None and watch.lowest >= 2, f"healthy replicas fell to {watch.lowest}"
    image = final["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]
    assert image.startswith((IMAGE_V1, IMAGE_V2)), image

    # Rerunning the operation succeeds, on a worker. It starts before the killed run is marked Crashed
    # (zombie detection needs 15-50 s after the kill), so the two waits overlap: the next operation
    # must not wait for the dead run's state either.
    again = stack.start_run("rolling-update/scalewise",
                            {"workload": name, "image": IMAGE_V2, "reason": "stack fault test, rerun"})
    crashed = wait_for(lambda: stack.flow_run(run_id)["state_type"] in ("CRASHED", "FAILED", "COMPLETED")
                       and stack.flow_run(run_id), "the killed run to reach a final state", logs=logs)
    assert crashed["state_type"] == "CRASHED", (crashed["state"], logs())
    done = wait_for(lambda: stack.flow_run(again)["state_type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")
                    and stack.flow_run(again), "the rerun to finish", logs=logs)
    assert done["state_type"] == "COMPLETED", (done["state"], logs())
    assert service(name)["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"].startswith(IMAGE_V2)
    assert healthy(name) == 2
