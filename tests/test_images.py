"""The scalewise image (scripts/build-scalewise-image.sh) on the real Docker engine, and a Prefect docker
work pool whose worker runs a real flow run in that image against the test Prefect server."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import yaml

from flows.deploy import deploy
from scalewise import history, orchestrators
from scalewise.local import LocalServer
from tests.support.docker_env import IMAGE_V1, health_check, unique_name

pytestmark = [pytest.mark.docker]
ROOT = Path(__file__).resolve().parents[1]
PREFECT = str(Path(sys.executable).with_name("prefect"))
BUILD_TIMEOUT_S = 1800  # a cold build (debootstrap + wheelhouse + install) on a loaded 2-core machine


@pytest.fixture(scope="session")
def scalewise_image(docker_engine: None) -> str:
    """The image, built by the project's script (cached: a no-op when its inputs are unchanged)."""
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "build-scalewise-image.sh")],
        capture_output=True, text=True, timeout=BUILD_TIMEOUT_S,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout.strip().splitlines()[-1]


def run(image: str, *cmd: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", "run", "--rm", image, *cmd], capture_output=True, text=True, timeout=300, **kw)


def test_image_runs_as_non_root_with_only_scalewise_installed_and_bytecode(scalewise_image: str) -> None:
    ident = run(scalewise_image, "id", "-u")
    assert ident.returncode == 0, ident.stderr
    assert ident.stdout.strip() == "10001"
    check = run(scalewise_image, "python", "-c", (
        "import importlib.metadata as m, json, pathlib, sys\n"
        "top = sorted({f.parts[0] for f in m.files('scalewise') if f.parts[0] != '..'})  # '..': bin/scalewise\n"
        "import prefect\n"
        "pyc = sum(1 for _ in pathlib.Path(prefect.__file__).parent.rglob('*.pyc'))\n"
        "print(json.dumps({'top': top, 'pyc': pyc, 'prefix': sys.prefix}))"
    ))
    assert check.returncode == 0, check.stderr
    found = json.loads(check.stdout)
    assert found["top"] == ["scalewise", "scalewise-0.1.0.dist-info"]  # the wheel holds only the package
    assert found["pyc"] > 100  # compiled at build time: nothing is compiled at start-up
    assert found["prefix"] == "/opt/venv"
    # The Prefect project layer sits in the working directory, next to prefect.yaml.
    listing = run(scalewise_image, "sh", "-c", "pwd; ls; ls flows/scale.py tasks/__init__.py")
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout.splitlines()[0] == "/opt/scalewise"
    assert "prefect.yaml" in listing.stdout
    # Nothing from the host's certificate store was copied in.
    certs = run(scalewise_image, "sh", "-c", "grep -rl 'BEGIN CERTIFICATE' /usr/local/share/ca-certificates | wc -l")
    assert certs.stdout.strip() == "0"


def test_cli_help_works_in_the_image(scalewise_image: str) -> None:
    out = run(scalewise_image, "scalewise", "--help")
    assert out.returncode == 0, out.stderr
    for command in ("scale-out", "rollout", "history", "webhook"):
        assert command in out.stdout


def health(client: Any, container_id: str) -> str:
    status: str = client.api.inspect_container(container_id)["State"]["Health"]["Status"]
    return status


def test_healthcheck_turns_healthy_when_the_receiver_serves_and_unhealthy_when_not(scalewise_image: str) -> None:
    client = docker.from_env(timeout=60)
    env = {"SCALEWISE_WEBHOOK_ALERTMANAGER_TOKEN": "t" * 32, "SCALEWISE_WEBHOOK_CI_SECRET": "s" * 32,
           "PREFECT_API_URL": "http://127.0.0.1:9/api"}
    config = ROOT / "deployments" / "webhook.example.yaml"
    name = unique_name("img-health")
    # The image's own check command (an empty test inherits it), checked every second with a 1 s start
    # period instead of the image's 5 s / 30 s: "unhealthy" needs the start period plus 3 failed checks,
    # which took ~45 s with the image's timings. The command is what is under test, not the timings.
    second = 1_000_000_000
    fast = {"test": [], "interval": second, "start_period": second, "retries": 3}
    serving = client.containers.run(
        scalewise_image, detach=True, name=name, environment=env, labels={"scalewise.test": "1"},
        volumes={str(config): {"bind": "/etc/scalewise/webhook.yaml", "mode": "ro"}}, healthcheck=fast,
    )
    idle = client.containers.run(  # same image, nothing listening on the checked port
        scalewise_image, ["sleep", "600"], detach=True, name=f"{name}-idle", labels={"scalewise.test": "1"},
        healthcheck=fast,
    )
    try:
        image_check = client.images.get(scalewise_image).attrs["Config"]["Healthcheck"]["Test"]
        assert image_check == ["CMD", "python", "/opt/scalewise/deployments/healthcheck.py"], image_check
        for c in (serving, idle):  # the containers run the image's check command, only faster
            check = client.api.inspect_container(c.id)["Config"]["Healthcheck"]
            assert check["Test"] == image_check and check["Interval"] == second, check
        deadline = time.monotonic() + 240
        states: dict[str, str] = {}
        while time.monotonic() < deadline:
            states = {"serving": health(client, serving.id), "idle": health(client, idle.id)}
            if states == {"serving": "healthy", "idle": "unhealthy"}:
                break
            time.sleep(1)
        assert states == {"serving": "healthy", "idle": "unhealthy"}, (states, serving.logs()[-2000:])
    finally:
        for c in (serving, idle):
            c.remove(force=True)


class Worker:
    """``prefect worker start`` on the host against the test server."""

    def __init__(self, pool: str, api_url: str, log: Path, kind: str = "docker") -> None:
        env = dict(os.environ, PREFECT_API_URL=api_url, PREFECT_WORKER_QUERY_SECONDS="1",
                   PREFECT_WORKER_PREFETCH_SECONDS="1")
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [PREFECT, "worker", "start", "--pool", pool, "--type", kind, "--name", pool],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)


@pytest.fixture
def shared_workloads(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A workloads folder the container's user (10001) can read (pytest's tmp_path is private to root)."""
    folder = Path(tempfile.mkdtemp(prefix="scalewise-images-"))
    folder.chmod(0o755)
    monkeypatch.setenv("SCALEWISE_WORKLOADS", str(folder))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def prefect_cli(api_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PREFECT_API_URL=api_url)
    return subprocess.run([PREFECT, "--no-prompt", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.swarm
@pytest.mark.prefect
def test_docker_worker_runs_a_scale_flow_in_the_image(
    scalewise_image: str, prefect_server: LocalServer, shared_workloads: Path, tmp_path: Path
) -> None:
    from prefect.client.orchestration import get_client

    name = unique_name("img")
    spec_file = shared_workloads / f"{name}.yaml"
    spec_file.write_text(yaml.safe_dump(swarm_spec(name)))
    spec_file.chmod(0o644)
    pool = unique_name("pool-docker")
    api = prefect_server.api_url
    engine = docker.from_env(timeout=60)
    worker: Worker | None = None
    try:
        deploy(workload=name, reason="image test setup")  # 1 replica, created from the host
        made = subprocess.run(
            [sys.executable, str(ROOT / "deployments" / "pools.py"), "docker", "--name", pool,
             "--workloads", str(shared_workloads), "--image", scalewise_image],
            cwd=ROOT, env=dict(os.environ, PREFECT_API_URL=api), capture_output=True, text=True, timeout=300,
        )
        assert made.returncode == 0, made.stdout + made.stderr
        dep = prefect_cli(api, "deploy", "flows/scale.py:scale", "--name", pool, "--pool", pool)
        assert dep.returncode == 0, dep.stdout + dep.stderr
        worker = Worker(pool, api, tmp_path / "worker.log")

        with get_client(sync_client=True) as client:
            deployment = client.read_deployment_by_name(f"scale/{pool}")
            assert deployment.work_pool_name == pool
            run = client.create_flow_run_from_deployment(  # kept after exit, to be inspected below
                deployment.id, parameters={"workload": name, "replicas": 2, "reason": "scale in a container"},
                job_variables={"auto_remove": False},
            )
            state = wait_final(client, run.id, worker, 420)
            assert state is not None and state.is_completed(), (state, worker.log.read_text()[-6000:])
            infra = client.read_flow_run(run.id).infrastructure_pid

        # The flow ran in a container of the image, as the non-root user, on the host network.
        assert infra, worker.log.read_text()[-4000:]
        container = engine.containers.get(infra.rsplit(":", 1)[1])
        try:
            assert scalewise_image in container.image.tags
            assert container.attrs["Config"]["User"] == "10001:10001"
            assert container.attrs["HostConfig"]["NetworkMode"] == "host"
            assert container.attrs["State"]["ExitCode"] == 0
            assert "/var/run/docker.sock" in {m["Destination"] for m in container.attrs["Mounts"]}
        finally:
            container.remove(force=True)
        svc = engine.services.get(name).attrs["Spec"]
        assert svc["Mode"]["Replicated"]["Replicas"] == 2
        entries = [e.record for e in history.fetch(name)]
        assert [(r.operation, r.outcome) for r in entries] == [("deploy", "succeeded"), ("scale", "succeeded")]
        assert entries[-1].flow_run_id is not None and str(entries[-1].flow_run_id) == str(run.id)
        assert (entries[-1].before.replicas, entries[-1].after.replicas) == (1, 2)
        assert entries[-1].reason == "scale in a container"
    finally:
        if worker is not None:
            worker.stop()
        for svc in engine.services.list(filters={"name": name}):
            svc.remove()
        orchestrators.reset()
        prefect_cli(api, "work-pool", "delete", pool)


def swarm_spec(name: str) -> dict[str, Any]:
    return {
        "name": name, "target": "swarm", "image": IMAGE_V1,
        "healthcheck": health_check(),
        "replicas": {"min": 1, "max": 4, "initial": 1},
        "update": {"parallelism": 1, "order": "start-first", "monitor": "2s", "timeout": "60s"},
        "stop_grace_period": "1s",
    }


def wait_final(client: Any, run_id: Any, worker: Worker, timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    state = None
    while time.monotonic() < deadline:
        state = client.read_flow_run(run_id).state
        if state is not None and state.is_final():
            return state
        assert worker.proc.poll() is None, worker.log.read_text()[-4000:]
        time.sleep(1)
    return state


@pytest.mark.swarm
@pytest.mark.prefect
def test_process_worker_runs_a_scale_flow_without_docker_for_the_run(
    prefect_server: LocalServer, workloads_dir: Path, tmp_path: Path
) -> None:
    """The pool for hosts without Docker: pools.py points runs at the project directory."""
    from prefect.client.orchestration import get_client

    name = unique_name("proc")
    (workloads_dir / f"{name}.yaml").write_text(yaml.safe_dump(swarm_spec(name)))
    pool = unique_name("pool-process")
    api = prefect_server.api_url
    worker: Worker | None = None
    try:
        deploy(workload=name, reason="process pool test setup")
        bad = subprocess.run(
            [sys.executable, str(ROOT / "deployments" / "pools.py"), "process", "--name", " "],
            cwd=ROOT, env=dict(os.environ, PREFECT_API_URL=api), capture_output=True, text=True, timeout=120,
        )
        assert bad.returncode == 2 and "name: must not be empty" in bad.stderr
        made = subprocess.run(
            [sys.executable, str(ROOT / "deployments" / "pools.py"), "process", "--name", pool],
            cwd=ROOT, env=dict(os.environ, PREFECT_API_URL=api), capture_output=True, text=True, timeout=300,
        )
        assert made.returncode == 0, made.stdout + made.stderr
        dep = prefect_cli(api, "deploy", "flows/scale.py:scale", "--name", pool, "--pool", pool)
        assert dep.returncode == 0, dep.stdout + dep.stderr
        worker = Worker(pool, api, tmp_path / "worker.log", kind="process")
        with get_client(sync_client=True) as client:
            deployment = client.read_deployment_by_name(f"scale/{pool}")
            run = client.create_flow_run_from_deployment(
                deployment.id, parameters={"workload": name, "replicas": 3, "reason": "scale by a process worker"}
            )
            state = wait_final(client, run.id, worker, 300)
            assert state is not None and state.is_completed(), (state, worker.log.read_text()[-6000:])
        assert docker.from_env().services.get(name).attrs["Spec"]["Mode"]["Replicated"]["Replicas"] == 3
        last = history.fetch(name)[-1].record
        assert (last.operation, last.outcome, str(last.flow_run_id)) == ("scale", "succeeded", str(run.id))
    finally:
        if worker is not None:
            worker.stop()
        for svc in docker.from_env().services.list(filters={"name": name}):
            svc.remove()
        orchestrators.reset()
        prefect_cli(api, "work-pool", "delete", pool)
