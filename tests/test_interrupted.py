"""Interrupted operations are visible and short-lived (issue 11, item 4), on real components.

A rolling update on the plain Docker engine (the adapter drives it replica by replica, so a kill
leaves a half-done change) is killed with SIGKILL mid-rollout, once as a ``scalewise rollout`` CLI
process and once as a run served by ``deployments/serve.py``. Then:

* ``scalewise history`` shows the interrupted action (``in_progress``, with trigger, plan, before);
* the flow run is marked Crashed by the run_health automation (heartbeats stopped);
* the next operation on the workload gets the lock although the dead holder's Prefect lease (60 s
  minimum) has not expired: it runs with ``SCALEWISE_LOCK_TIMEOUT=45``, so it fails unless the
  lock is taken over well before the lease would run out;
* that operation completes the change and records the old one as ``interrupted``;
* ready replicas never drop below the spec's floor (start-first, max unavailable 0).

A canary killed in its pause (``scalewise canary`` SIGKILLed) holds to the same: visible, Crashed, taken over
by the same canary run again, which walks its steps and promotes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun

from flows.rolling_update import rolling_update
from scalewise import history
from scalewise.audit import ActionRecord, Trigger
from scalewise.local import LocalServer
from scalewise.orchestrators.engine import EngineOrchestrator
from scalewise.spec import WorkloadSpec
from tests.support.docker_env import IMAGE_V1, IMAGE_V2, IMAGE_V3
from tests.support.prefect_env import ROOT, Served
from tests.support.procs import kill_tree, wait_for
from tests.support.targets import TargetHarness

pytestmark = [pytest.mark.docker, pytest.mark.prefect]

REPLICAS = 3
#: The run_health automation marks a run Crashed at most ~50 s after its process died; slack for load.
CRASHED_WITHIN_S = 90.0
#: The next operation's own lock timeout: the dead holder's Prefect lease alone would take >= 60 s.
NEXT_LOCK_TIMEOUT_S = "45"


class ReadyFloor:
    """Samples the workload's ready replicas in a thread (its own adapter instance); keeps the minimum."""

    def __init__(self, spec: WorkloadSpec) -> None:
        self.spec = spec
        self.orch = EngineOrchestrator.from_env()
        self.samples: list[int] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(0.3):
            try:
                self.samples.append(self.orch.read(self.spec).ready_replicas)
            except Exception:  # a read racing a container removal: skip the sample
                continue

    def __enter__(self) -> ReadyFloor:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        self.orch.close()


@pytest.fixture()
def workload(
    docker_target: TargetHarness, prefect_server: LocalServer, workloads_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[WorkloadSpec]:
    # a 4 s monitor window per replica: the rollout takes long enough to be killed in the middle
    spec = docker_target.make_spec(replicas=REPLICAS, monitor=4, timeout=120)
    doc = spec.model_dump(mode="json", exclude_none=True)
    doc["replicas"] = {"min": REPLICAS, "max": 10, "initial": REPLICAS}
    (workloads_dir / f"{spec.name}.yaml").write_text(yaml.safe_dump(doc))
    from flows.deploy import deploy

    deploy(workload=spec.name, reason="test deploy", trigger=Trigger(kind="api", actor="test"))
    yield spec


def records(name: str) -> list[ActionRecord]:
    return [e.record for e in history.fetch(name)]


def open_record(name: str, operation: str = "rolling-update") -> ActionRecord | None:
    found = [r for r in records(name) if r.operation == operation and r.outcome == "in_progress"]
    return found[-1] if found else None


def flow_run(run_id: str) -> FlowRun:
    with get_client(sync_client=True) as client:
        return client.read_flow_run(UUID(run_id))


def running_with(name: str, image: str) -> int:
    """Running replica containers of ``name`` on ``image`` (docker CLI, not the adapter)."""
    proc = subprocess.run(
        ["docker", "ps", "-q", "--filter", f"label=scalewise.workload={name}", "--filter",
         "label=scalewise.role=replica", "--filter", f"ancestor={image}"],
        capture_output=True, text=True, timeout=60,
    )
    return len(proc.stdout.split())


def wait_crashed(dead: ActionRecord, killed_at: float) -> None:
    """Wait until the killed action's flow run is marked Crashed: bounded from the kill, with slack for a
    loaded machine (the automation needs at most ~50 s)."""

    def crashed() -> FlowRun | None:
        run = flow_run(dead.flow_run_id or "")
        return run if run.state is not None and run.state.is_crashed() else None

    left = max(1.0, killed_at + CRASHED_WITHIN_S - time.monotonic())
    wait_for(crashed, left, f"flow run {dead.flow_run_id} to be marked Crashed")


def after_the_kill(
    spec: WorkloadSpec, dead: ActionRecord, floor: ReadyFloor, monkeypatch: pytest.MonkeyPatch, killed_at: float
) -> None:
    """What must hold once the process running ``dead`` was killed (shared by both scenarios)."""
    assert dead.trigger is not None and dead.before.replicas == REPLICAS and dead.plan, dead
    assert dead.flow_run_id is not None
    # the next operation: it must get the lock well before the dead holder's 60 s lease would expire
    monkeypatch.setenv("SCALEWISE_LOCK_TIMEOUT", NEXT_LOCK_TIMEOUT_S)
    nxt = rolling_update(
        workload=spec.name, image=IMAGE_V3, reason="after the kill", trigger=Trigger(kind="api", actor="test")
    )
    assert nxt.outcome == "succeeded", nxt
    assert any(f"took over from interrupted rolling-update {dead.id}" in step for step in nxt.plan), nxt.plan
    state = EngineOrchestrator.from_env().read(spec)
    assert (state.image, state.desired_replicas, state.ready_replicas) == (IMAGE_V3, REPLICAS, REPLICAS), state
    # the history: the killed action recorded as interrupted (once), then the one that took over
    mine = [r for r in records(spec.name) if r.operation == "rolling-update"]
    assert [(r.id, r.outcome) for r in mine] == [(dead.id, "interrupted"), (nxt.id, "succeeded")], mine
    assert mine[0].error is not None and "interrupted" in mine[0].error

    wait_crashed(dead, killed_at)
    print(  # figures for the report, never asserted
        f"lock wait of the next operation {nxt.durations.get('lock_s')}s; "
        f"Crashed seen {time.monotonic() - killed_at:.0f}s after the kill (upper bound)"
    )
    floor.stop.set()
    floor.thread.join(timeout=10)
    assert floor.samples and min(floor.samples) >= REPLICAS, floor.samples


def test_a_sigkilled_cli_rollout_is_visible_crashed_and_taken_over(
    workload: WorkloadSpec, prefect_server: LocalServer, workloads_dir: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec = workload
    log = tmp_path / "cli.log"
    env = dict(os.environ, PREFECT_API_URL=prefect_server.api_url, SCALEWISE_WORKLOADS=str(workloads_dir))
    with ReadyFloor(spec) as floor:
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [str(Path(sys.executable).with_name("scalewise")), "rollout", spec.name, IMAGE_V2],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )
        try:
            dead = wait_for(lambda: open_record(spec.name), 90, "the rollout's in_progress record", log)
            # let it start replacing replicas, then kill it mid-rollout
            wait_for(lambda: running_with(spec.name, IMAGE_V2) >= 1, 60, "a first new replica", log)
            os.killpg(proc.pid, signal.SIGKILL)
            killed_at = time.monotonic()
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        assert running_with(spec.name, IMAGE_V1) >= 1  # really half-done: old replicas left
        assert open_record(spec.name) is not None  # `scalewise history` shows it until taken over
        after_the_kill(spec, dead, floor, monkeypatch, killed_at)


def test_a_killed_served_rollout_is_visible_crashed_and_taken_over(
    workload: WorkloadSpec, prefect_server: LocalServer, workloads_dir: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec = workload
    monkeypatch.setenv("SCALEWISE_AUTOSCALE_INTERVAL", "off")
    srv = Served(prefect_server.api_url, workloads_dir, tmp_path / "serve.log")
    try:
        srv.wait_registered(["rolling-update/scalewise"])
        with ReadyFloor(spec) as floor:
            from prefect.deployments import run_deployment

            run_deployment(
                "rolling-update/scalewise", parameters={"workload": spec.name, "image": IMAGE_V2}, timeout=0,
            )
            dead = wait_for(lambda: open_record(spec.name), 120, "the served rollout's in_progress record", srv.log)
            wait_for(lambda: running_with(spec.name, IMAGE_V2) >= 1, 60, "a first new replica", srv.log)
            kill_tree(srv.proc.pid)  # the runner and the process running the flow
            killed_at = time.monotonic()
            srv.proc.wait(timeout=30)
            assert open_record(spec.name) is not None
            after_the_kill(spec, dead, floor, monkeypatch, killed_at)
    finally:
        srv.stop()


def test_a_sigtermed_runner_finishes_the_rollout_in_flight_and_takes_no_new_run(
    workload: WorkloadSpec, prefect_server: LocalServer, workloads_dir: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SIGTERM to serve.py alone (what ``docker stop`` sends a container's main process) in the middle of a
    served rollout: the runner takes no new run, lets the rollout finish (it drains up to ``--drain``), then
    exits. The rollout ends Completed with its record succeeded, not cancelled half-done; a run created
    after the signal stays Scheduled for the next runner."""
    from prefect.deployments import run_deployment

    spec = workload
    monkeypatch.setenv("SCALEWISE_AUTOSCALE_INTERVAL", "off")
    # a drain far above the rollout's own 120 s timeout: a loaded machine never cuts it short here
    srv = Served(prefect_server.api_url, workloads_dir, tmp_path / "serve.log", "--drain", "600")
    try:
        srv.wait_registered(["rolling-update/scalewise", "scale/scalewise"])
        with ReadyFloor(spec) as floor:
            rollout: FlowRun = run_deployment(  # type: ignore[assignment]  # sync call: a FlowRun
                "rolling-update/scalewise", parameters={"workload": spec.name, "image": IMAGE_V2}, timeout=0,
            )
            wait_for(lambda: running_with(spec.name, IMAGE_V2) >= 1, 120, "a first new replica", srv.log)
            assert running_with(spec.name, IMAGE_V1) >= 1  # mid-rollout
            os.kill(srv.proc.pid, signal.SIGTERM)  # the runner only: its runs' processes get no signal
            wait_for(lambda: "draining" in srv.log.read_text(errors="replace"), 30, "serve.py to start draining",
                     srv.log)
            later: FlowRun = run_deployment(  # type: ignore[assignment]
                "scale/scalewise", parameters={"workload": spec.name, "replicas": REPLICAS + 1}, timeout=0,
            )
            srv.proc.wait(timeout=300)  # the rollout: ~20 s on a quiet machine, bounded by its 120 s timeout
        log = srv.log.read_text(errors="replace")
        assert "serve.py: drained" in log and "still in flight" not in log, log[-3000:]
        done = flow_run(str(rollout.id))
        assert done.state is not None and done.state.is_completed(), done.state
        mine = [r for r in records(spec.name) if r.operation == "rolling-update"]
        assert [r.outcome for r in mine] == ["succeeded"], mine
        state = EngineOrchestrator.from_env().read(spec)
        assert (state.image, state.desired_replicas, state.ready_replicas) == (IMAGE_V2, REPLICAS, REPLICAS), state
        waiting = flow_run(str(later.id))
        assert waiting.state is not None and waiting.state.is_scheduled(), waiting.state
        assert floor.samples and min(floor.samples) >= REPLICAS, floor.samples
    finally:
        srv.stop()


def test_a_sigkilled_cli_canary_is_visible_crashed_and_rerun_promotes(
    workload: WorkloadSpec, prefect_server: LocalServer, workloads_dir: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A canary killed in its timed pause leaves the canary replica serving beside the untouched stable; the
    same canary run again takes the workload over, walks its steps and promotes."""
    from flows.canary import canary
    from scalewise.policy.canary import CanaryStep

    spec = workload
    steps = tmp_path / "steps.yaml"
    steps.write_text(yaml.safe_dump({"steps": [{"set_weight": 34}, {"pause": {"duration": "10m"}}]}))
    log = tmp_path / "cli.log"
    env = dict(os.environ, PREFECT_API_URL=prefect_server.api_url, SCALEWISE_WORKLOADS=str(workloads_dir))
    orch = EngineOrchestrator.from_env()
    with ReadyFloor(spec) as floor:
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [str(Path(sys.executable).with_name("scalewise")), "canary", spec.name, IMAGE_V2, "--file", str(steps)],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )
        try:
            dead = wait_for(lambda: open_record(spec.name, "canary"), 90, "the canary's in_progress record", log)
            # the canary replica is up and the run went on to its 10-minute pause: kill it there
            wait_for(lambda: f"{spec.name}: canary {IMAGE_V2}" in log.read_text(errors="replace"), 120,
                     "the canary replica to be ready", log)
            os.killpg(proc.pid, signal.SIGKILL)
            killed_at = time.monotonic()
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        left = orch.read_canary(spec)
        assert left is not None and left.image == IMAGE_V2, left  # the canary outlives its run
        assert open_record(spec.name, "canary") is not None

        monkeypatch.setenv("SCALEWISE_LOCK_TIMEOUT", NEXT_LOCK_TIMEOUT_S)
        nxt = canary(
            workload=spec.name, image=IMAGE_V2, reason="after the kill", trigger=Trigger(kind="api", actor="test"),
            steps=[CanaryStep.model_validate(s) for s in ({"set_weight": 34}, {"pause": {"duration": "1s"}})],
        )
    assert nxt.outcome == "succeeded" and nxt.reason_code == "canary_promoted", nxt
    assert any(f"took over from interrupted canary {dead.id}" in step for step in nxt.plan), nxt.plan
    state = orch.read(spec)
    assert (state.image, state.desired_replicas, state.ready_replicas) == (IMAGE_V2, REPLICAS, REPLICAS), state
    assert orch.read_canary(spec) is None
    mine = [r for r in records(spec.name) if r.operation == "canary"]
    assert [(r.id, r.outcome) for r in mine] == [(dead.id, "interrupted"), (nxt.id, "succeeded")], mine

    wait_crashed(dead, killed_at)
    assert floor.samples and min(floor.samples) >= REPLICAS, floor.samples
