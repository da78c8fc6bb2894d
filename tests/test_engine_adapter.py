"""Plain Docker engine adapter specifics, on the real engine (no mocks).

Crash states are built by hand with the docker CLI (containers of a second revision carrying the
adapter's labels, as a scalewise process killed mid-update would leave them); then a *fresh*
adapter instance is asked to act.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from scalewise.errors import ConflictError, PermanentError, RolloutFailed, TransientError
from scalewise.orchestrators import engine as eng
from scalewise.orchestrators.engine import EngineOrchestrator
from scalewise.spec import WorkloadSpec
from tests.support.docker_env import CHECK_INTERVAL_S, HTTP_CHECK, IMAGE_BROKEN, IMAGE_V1, IMAGE_V2, IMAGE_V3, ROOT
from tests.support.target_engine import all_ids, engine_fetch, replica_ids
from tests.support.targets import TargetHarness

pytestmark = pytest.mark.docker
WAIT_S = 60.0


@pytest.fixture
def fresh() -> Iterator[EngineOrchestrator]:
    """A second, independent adapter instance (a new scalewise process, as far as state goes)."""
    orch = EngineOrchestrator.from_env()
    yield orch
    orch.close()


def deploy(target: TargetHarness, replicas: int = 2, **kw: object) -> WorkloadSpec:
    spec = target.make_spec(replicas=replicas, **kw)
    target.orchestrator.apply(spec)
    result = target.orchestrator.wait_converged(spec, timeout_s=WAIT_S, poll_s=0.25)
    assert result.converged, result
    return spec


def docker(*args: str) -> str:
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"docker {' '.join(args)}: {proc.stderr}"
    return proc.stdout.strip()


def run_by_hand(
    spec: WorkloadSpec, *, revision: int, image: str, slot: int, desired: int, history: list[tuple[int, str]]
) -> str:
    """Start a replica container exactly as an interrupted rolling update would have left it."""
    labels = {
        **spec.labels,
        eng.LABEL_WORKLOAD: spec.name,
        eng.LABEL_MANAGED: "true",
        eng.LABEL_ROLE: eng.ROLE_REPLICA,
        eng.LABEL_REVISION: str(revision),
        eng.LABEL_IMAGE: image,
        eng.LABEL_SPEC_HASH: eng.template_hash(spec),
        eng.LABEL_SLOT: str(slot),
        eng.LABEL_DESIRED: str(desired),
        eng.LABEL_REVISIONS: json.dumps([{"n": n, "image": i} for n, i in history]),
        eng.LABEL_HEALTHCHECK: "true",
    }
    args = [
        "run",
        "-d",
        "--init",
        "--restart",
        "unless-stopped",
        "--name",
        f"{spec.name}-r{revision}-{slot}-hand",
    ]
    for key, value in labels.items():
        args += ["--label", f"{key}={value}"]
    args += ["--health-cmd", HTTP_CHECK, "--health-interval", f"{CHECK_INTERVAL_S}s", "--health-timeout", "1s"]
    args += ["--health-retries", "2", image]
    return docker(*args)


def wait_healthy(container_ids: list[str], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        states = [docker("inspect", "-f", "{{.State.Health.Status}}", cid) for cid in container_ids]
        if all(s == "healthy" for s in states):
            return
        assert time.monotonic() < deadline, f"containers not healthy: {states}"
        time.sleep(0.25)


class Sampler:
    """Reads the workload in a thread (own adapter instance) and records every state seen."""

    def __init__(self, spec: WorkloadSpec) -> None:
        self.spec = spec
        self.ready: list[int] = []
        self.running: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        orch = EngineOrchestrator.from_env()
        try:
            while not self._stop.is_set():
                state = orch.read(self.spec)
                self.ready.append(state.ready_replicas)
                self.running.append(state.running_replicas)
                time.sleep(0.1)
        finally:
            orch.close()

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


# ------------------------------------------------------------------------------ crash recovery


def test_interrupted_update_is_finished_when_new_revision_is_complete_and_healthy(
    docker_target: TargetHarness, fresh: EngineOrchestrator
) -> None:
    spec = deploy(docker_target, replicas=2)
    history = [(1, IMAGE_V1), (2, IMAGE_V2)]
    new = [run_by_hand(spec, revision=2, image=IMAGE_V2, slot=slot, desired=2, history=history) for slot in (1, 2)]
    wait_healthy(new)

    seen = fresh.read(spec)
    assert seen.updating is True
    assert seen.update_state == "updating"
    assert seen.revision == 1
    assert len(replica_ids(spec.name)) == 4

    result = fresh.wait_converged(spec, timeout_s=WAIT_S, poll_s=0.25)
    assert result.converged, result
    assert result.reason == "converged"
    assert result.state.revision == 2
    assert result.state.image == IMAGE_V2
    assert result.state.ready_replicas == result.state.desired_replicas == 2
    assert sorted(replica_ids(spec.name)) == sorted(new), "the finished update keeps the new containers"
    assert engine_fetch(spec) == ["v2", "v2"]
    assert [(r.number, r.image) for r in fresh.revisions(spec)] == history
    # The first adapter instance reads the same converged state.
    assert docker_target.orchestrator.read(spec).version == result.state.version


def test_interrupted_update_is_rolled_back_when_new_revision_is_incomplete(
    docker_target: TargetHarness, fresh: EngineOrchestrator
) -> None:
    spec = deploy(docker_target, replicas=2)
    old = sorted(replica_ids(spec.name))
    new = run_by_hand(spec, revision=2, image=IMAGE_V2, slot=1, desired=2, history=[(1, IMAGE_V1), (2, IMAGE_V2)])
    wait_healthy([new])
    assert fresh.read(spec).updating

    result = fresh.wait_converged(spec, timeout_s=WAIT_S, poll_s=0.25)
    assert not result.converged
    assert result.reason == "rolled_back", "this wait rolled the interrupted update back"
    assert "interrupted" in result.detail
    state = result.state
    assert (state.updating, state.revision, state.image, state.ready_replicas) == (False, 1, IMAGE_V1, 2)
    assert state.update_state == "rollback_completed"
    assert sorted(replica_ids(spec.name)) == old, "old containers are kept, the new one removed"
    assert engine_fetch(spec) == ["v1", "v1"]
    assert [r.number for r in fresh.revisions(spec)] == [1]
    # A later wait finds nothing to repair: converged; apply of the same spec writes nothing.
    again = fresh.wait_converged(spec, timeout_s=WAIT_S)
    assert again.converged and again.reason == "converged"
    assert fresh.apply(spec).version == again.state.version


def test_interrupted_update_with_unhealthy_containers_is_rolled_back_before_a_new_update(
    docker_target: TargetHarness, fresh: EngineOrchestrator
) -> None:
    spec = deploy(docker_target, replicas=1)
    broken = run_by_hand(
        spec, revision=2, image=IMAGE_BROKEN, slot=1, desired=1, history=[(1, IMAGE_V1), (2, IMAGE_BROKEN)]
    )
    seen = fresh.read(spec)
    assert seen.updating

    state = fresh.update_image(spec, IMAGE_V3, seen.version)
    assert broken not in replica_ids(spec.name, running_only=False)
    assert state.image == IMAGE_V3
    assert state.updating is False
    assert state.ready_replicas == state.desired_replicas == 1
    assert engine_fetch(spec) == ["v3"]
    assert [r.image for r in fresh.revisions(spec)] == [IMAGE_V1, IMAGE_V3]
    # Synchronous update: nothing left to wait for.
    result = fresh.wait_converged(spec, timeout_s=WAIT_S)
    assert result.converged and result.elapsed_s < 5


def test_state_is_recovered_by_a_fresh_adapter_instance(
    docker_target: TargetHarness, fresh: EngineOrchestrator
) -> None:
    orch = docker_target.orchestrator
    spec = deploy(docker_target, replicas=1)
    orch.update_image(spec, IMAGE_V2, orch.read(spec).version)
    orch.set_replicas(spec, 3, orch.read(spec).version)
    mine = orch.wait_converged(spec, timeout_s=WAIT_S, poll_s=0.25).state

    theirs = fresh.read(spec)
    assert theirs.desired_replicas == 3
    assert theirs.revision == 2
    assert theirs.image == IMAGE_V2
    assert theirs.version == mine.version
    assert fresh.revisions(spec) == orch.revisions(spec)
    # The fresh instance can write with the token the first one observed.
    assert fresh.set_replicas(spec, 2, mine.version).desired_replicas == 2


UPDATER = """
import sys
from scalewise.orchestrators.engine import EngineOrchestrator
from scalewise.spec import WorkloadSpec
spec = WorkloadSpec.model_validate_json(sys.stdin.read())
orch = EngineOrchestrator.from_env()
orch.update_image(spec, sys.argv[1], orch.read(spec).version)
"""


def test_process_killed_mid_update_is_rolled_back_by_the_next_one(
    docker_target: TargetHarness, fresh: EngineOrchestrator
) -> None:
    spec = deploy(docker_target, replicas=2)
    old = sorted(replica_ids(spec.name))
    proc = subprocess.Popen([sys.executable, "-c", UPDATER, IMAGE_V2], stdin=subprocess.PIPE, text=True, cwd=str(ROOT))
    assert proc.stdin is not None
    proc.stdin.write(spec.model_dump_json())
    proc.stdin.close()
    try:
        deadline = time.monotonic() + 30
        while not fresh.read(spec).updating:  # its first new container exists
            assert proc.poll() is None, "the updater exited before it started the rollout"
            assert time.monotonic() < deadline, "the updater never started the rollout"
            time.sleep(0.05)
    finally:
        proc.kill()  # SIGKILL: no cleanup, no finally blocks; the flock goes with the process
        proc.wait(timeout=10)
    assert fresh.read(spec).updating, "the killed process left two revisions behind"
    result = fresh.wait_converged(spec, timeout_s=WAIT_S, poll_s=0.25)
    assert result.reason == "rolled_back", result
    assert (result.state.revision, result.state.image, result.state.ready_replicas) == (1, IMAGE_V1, 2)
    assert sorted(replica_ids(spec.name)) == old
    assert engine_fetch(spec) == ["v1", "v1"]


# ------------------------------------------------------------------------------ rolling updates


def test_start_first_update_never_drops_ready_below_desired(docker_target: TargetHarness) -> None:
    orch = docker_target.orchestrator
    spec = deploy(docker_target, replicas=2)
    old = set(replica_ids(spec.name))
    with Sampler(spec) as sampler:
        state = orch.update_image(spec, IMAGE_V2, orch.read(spec).version)
    assert state.image == IMAGE_V2 and state.revision == 2
    assert state.ready_replicas == 2, "the synchronous update returns the converged state"
    assert sampler.ready, "the sampler saw nothing"
    assert min(sampler.ready) >= 2, f"ready dropped during a start-first update: {sampler.ready}"
    assert max(sampler.running) <= 3, "parallelism 1: at most one extra container at a time"
    assert not old & set(replica_ids(spec.name))
    assert engine_fetch(spec) == ["v2", "v2"]


def test_stop_first_update_never_runs_more_than_desired(docker_target: TargetHarness) -> None:
    orch = docker_target.orchestrator
    spec = deploy(docker_target, replicas=2, order="stop-first", max_unavailable=1)
    with Sampler(spec) as sampler:
        state = orch.update_image(spec, IMAGE_V2, orch.read(spec).version)
    assert state.image == IMAGE_V2
    assert max(sampler.running) <= 2
    assert engine_fetch(spec) == ["v2", "v2"]


def test_broken_image_rollout_raises_and_old_containers_keep_serving(docker_target: TargetHarness) -> None:
    orch = docker_target.orchestrator
    spec = deploy(docker_target, replicas=2)
    old = sorted(replica_ids(spec.name))
    before = orch.read(spec)
    with Sampler(spec) as sampler, pytest.raises(RolloutFailed) as failed:
        orch.update_image(spec, IMAGE_BROKEN, before.version)
    assert failed.value.rolled_back_to == 1
    assert failed.value.workload == spec.name
    assert "unhealthy" in failed.value.reason
    assert min(sampler.ready) >= 2, sampler.ready
    assert sorted(replica_ids(spec.name)) == old, "the old containers were never touched"
    assert engine_fetch(spec) == ["v1", "v1"]
    after = orch.read(spec)
    assert (after.revision, after.image, after.ready_replicas) == (1, IMAGE_V1, 2)
    assert after.update_state == "rollback_completed"
    assert after.updating is False
    assert [r.image for r in orch.revisions(spec)] == [IMAGE_V1]
    # The rollback finished before any wait began: a wait sees the restored workload as converged.
    result = orch.wait_converged(spec, timeout_s=WAIT_S)
    assert result.converged and result.elapsed_s < 5


def test_broken_stop_first_rollout_restores_the_replaced_containers(docker_target: TargetHarness) -> None:
    orch = docker_target.orchestrator
    spec = deploy(docker_target, replicas=2, order="stop-first", max_unavailable=1)
    with pytest.raises(RolloutFailed):
        orch.update_image(spec, IMAGE_BROKEN, orch.read(spec).version)
    state = orch.read(spec)
    assert (state.revision, state.image, state.desired_replicas) == (1, IMAGE_V1, 2)
    assert state.ready_replicas == 2, "the replaced old container was recreated and awaited"
    assert engine_fetch(spec) == ["v1", "v1"]
    assert all(docker("inspect", "-f", "{{.Config.Image}}", cid) == IMAGE_V1 for cid in replica_ids(spec.name))


def test_a_concurrent_wait_watches_a_live_update_and_never_rolls_it_back(
    docker_target: TargetHarness, fresh: EngineOrchestrator
) -> None:
    orch = docker_target.orchestrator
    spec = deploy(docker_target, replicas=2)
    version = orch.read(spec).version
    updater = threading.Thread(target=orch.update_image, args=(spec, IMAGE_V2, version))
    updater.start()
    deadline = time.monotonic() + 20
    while not fresh.read(spec).updating:  # the update has started its first new container
        assert time.monotonic() < deadline, "the update never showed a second revision"
        time.sleep(0.05)
    seen: list[bool] = []
    result = fresh.wait_converged(spec, timeout_s=WAIT_S, poll_s=0.2, on_progress=lambda s: seen.append(s.updating))
    updater.join(timeout=WAIT_S)
    assert result.converged and result.reason == "converged", result
    assert result.state.image == IMAGE_V2 and result.state.revision == 2
    assert True in seen, "the wait reported progress while the update ran"
    assert engine_fetch(spec) == ["v2", "v2"]


# ------------------------------------------------------------------------------ scaling and state


def test_scale_to_zero_keeps_an_anchor_and_scales_back(docker_target: TargetHarness, fresh: EngineOrchestrator) -> None:
    orch = docker_target.orchestrator
    spec = deploy(docker_target, replicas=2)
    zero = orch.set_replicas(spec, 0, orch.read(spec).version)
    assert zero.desired_replicas == 0
    assert replica_ids(spec.name, running_only=False) == []
    anchors = all_ids(spec.name)
    assert len(anchors) == 1
    assert docker("inspect", "-f", "{{.State.Status}}", anchors[0]) == "created", "the anchor never runs"
    assert orch.exists(spec)
    assert fresh.read(spec).desired_replicas == 0
    assert orch.wait_converged(spec, timeout_s=WAIT_S).converged
    back = orch.set_replicas(spec, 2, fresh.read(spec).version)
    assert back.desired_replicas == 2
    final = orch.wait_converged(spec, timeout_s=WAIT_S, poll_s=0.25)
    assert final.converged and final.state.ready_replicas == 2
    assert engine_fetch(spec) == ["v1", "v1"]


def test_lost_anchor_is_recovered_from_replica_labels(docker_target: TargetHarness) -> None:
    orch = docker_target.orchestrator
    spec = deploy(docker_target, replicas=2)
    replicas = set(replica_ids(spec.name, running_only=False))
    (anchor,) = set(all_ids(spec.name)) - replicas
    docker("rm", anchor)
    state = orch.read(spec)
    assert (state.desired_replicas, state.revision, state.image) == (2, 1, IMAGE_V1)
    assert "anchor" in (state.message or "")
    assert orch.wait_converged(spec, timeout_s=WAIT_S).converged
    assert len(set(all_ids(spec.name)) - replicas) == 1, "the anchor was written again"


def test_scale_in_removes_unhealthy_replicas_first(docker_target: TargetHarness) -> None:
    orch = docker_target.orchestrator
    spec = deploy(docker_target, replicas=3)
    slots = {
        cid: int(docker("inspect", "-f", '{{index .Config.Labels "scalewise.slot"}}', cid))
        for cid in replica_ids(spec.name)
    }
    sick = min(slots, key=lambda cid: slots[cid])  # slot 1: the oldest, last in plain newest-first order
    # httpd answers 404 from now on: the container keeps running but its health check fails.
    docker("exec", sick, "/bin/busybox", "rm", "/www/index.html")
    deadline = time.monotonic() + 20
    while orch.read(spec).ready_replicas > 2:
        assert time.monotonic() < deadline, "the container never turned unhealthy"
        time.sleep(0.25)
    state = orch.set_replicas(spec, 2, orch.read(spec).version)
    assert sick not in replica_ids(spec.name, running_only=False)
    assert state.ready_replicas == 2


# ------------------------------------------------------------------------------ errors and locking


def test_unreachable_engine_raises_transient_error(docker_target: TargetHarness) -> None:
    url = "unix:///nonexistent/scalewise-test/docker.sock"
    with pytest.raises(TransientError, match="unreachable"):
        EngineOrchestrator.from_env(base_url=url)
    orch = EngineOrchestrator.from_env(base_url=url, version="1.41", timeout_s=2)
    spec = docker_target.make_spec()
    try:
        with pytest.raises(TransientError):
            orch.read(spec)
        with pytest.raises(TransientError):
            orch.set_replicas(spec, 2, "whatever")
    finally:
        orch.close()


def test_missing_image_is_a_permanent_error_and_writes_nothing(docker_target: TargetHarness) -> None:
    orch = docker_target.orchestrator
    spec = docker_target.make_spec(image="scalewise/busybox:missing")
    with pytest.raises(PermanentError, match="busybox:missing"):
        orch.apply(spec)
    assert not orch.exists(spec)
    good = deploy(docker_target, replicas=1)
    before = orch.read(good)
    with pytest.raises(PermanentError, match="busybox:missing"):
        orch.update_image(good, "scalewise/busybox:missing", before.version)
    assert orch.read(good).version == before.version


def test_engine_409_maps_to_conflict_error(docker_target: TargetHarness) -> None:
    orch = docker_target.orchestrator
    spec = deploy(docker_target, replicas=1)
    squatter = docker("create", "--name", f"{spec.name}-anchor-2", IMAGE_V1)
    try:
        with pytest.raises(ConflictError, match="conflict"):
            orch.set_replicas(spec, 2, orch.read(spec).version)
        assert orch.read(spec).desired_replicas == 1
    finally:
        docker("rm", "-f", squatter)


def test_concurrent_writers_with_the_same_version_one_wins(docker_target: TargetHarness) -> None:
    spec = deploy(docker_target, replicas=1)
    version = docker_target.orchestrator.read(spec).version
    outcomes: list[str] = []

    def write(replicas: int) -> None:
        orch = EngineOrchestrator.from_env()
        try:
            orch.set_replicas(spec, replicas, version)
            outcomes.append("ok")
        except ConflictError:
            outcomes.append("conflict")
        finally:
            orch.close()

    threads = [threading.Thread(target=write, args=(n,)) for n in (2, 3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(outcomes) == ["conflict", "ok"]
    assert docker_target.orchestrator.read(spec).desired_replicas in (2, 3)
