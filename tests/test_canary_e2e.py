"""The canary flow on real components: the plain Docker engine (the embedded default target), a real
Prefect server (pauses, approvals, the action record) and a real Prometheus scraping a loopback exporter
whose error ratio the test sets. A good canary promotes; a bad one aborts while the stable never drops
below its desired ready count (sampled while the flow runs); an approval pause is answered through the
API or times out; `scalewise canary/promote/abort` drive the same flows."""

from __future__ import annotations

import contextvars
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName
from prefect.client.schemas.objects import FlowRun
from prefect.exceptions import ParameterTypeError

from flows.canary import canary
from flows.deploy import deploy
from scalewise import history, orchestrators
from scalewise.approval import resume
from scalewise.audit import ActionRecord, Trigger
from scalewise.errors import AnalysisFailed, CanaryFailed, SpecError
from scalewise.local import LocalServer
from scalewise.orchestrators.engine import EngineOrchestrator
from scalewise.policy.canary import CanaryStep
from scalewise.spec import WorkloadSpec, get_workload
from tests.support.cli_calls import cli
from tests.support.docker_env import IMAGE_V1, IMAGE_V2, health_check, unique_name
from tests.support.procs import wait_for
from tests.support.prom_env import METRIC, PromEnv
from tests.support.target_engine import force_remove

pytestmark = [pytest.mark.prom, pytest.mark.prefect, pytest.mark.docker]

QUERY = METRIC + '{workload="{workload}"}'
TEST_TRIGGER = Trigger(kind="api", actor="test")


def steps(*items: dict[str, Any]) -> list[CanaryStep]:
    return [CanaryStep.model_validate(item) for item in items]


def analysis_step(count: int = 2, failure_limit: int = 0) -> dict[str, Any]:
    return {"analysis": {"metrics": [{
        "name": "error-ratio", "query": QUERY, "success_condition": "result[0] < 0.05",
        "failure_condition": "result[0] > 0.2", "interval": "1s", "count": count, "failure_limit": failure_limit,
    }]}}


class Workload:
    def __init__(self, name: str, folder: Path, prom: PromEnv) -> None:
        self.name, self.folder, self.prom = name, folder, prom

    def declare(self, **update: Any) -> None:
        doc = {
            "name": self.name, "target": "docker", "image": IMAGE_V1, "labels": {"scalewise-test": "1"},
            "healthcheck": health_check(timeout_s=5, retries=3),
            "replicas": {"min": 1, "max": 4, "initial": 2},
            "update": {"parallelism": 1, "order": "start-first", "monitor": "1s", "timeout": "60s", **update},
            "stop_grace_period": "1s",
        }
        (self.folder / f"{self.name}.yaml").write_text(yaml.safe_dump(doc))

    @property
    def spec(self) -> WorkloadSpec:
        return get_workload(self.folder, self.name)

    def error_ratio(self, value: float) -> None:
        self.prom.exporter.set(self.name, value)
        self.prom.wait_for_value(QUERY.replace("{workload}", self.name), value, timeout=60)

    def records(self, operation: str = "canary") -> list[ActionRecord]:
        return [e.record for e in history.fetch(self.name) if e.record.operation == operation]


@pytest.fixture()
def wl(prom_env: PromEnv, prefect_server: LocalServer, workloads_dir: Path,
       monkeypatch: pytest.MonkeyPatch) -> Iterator[Workload]:
    monkeypatch.setenv("SCALEWISE_PROMETHEUS_URL", prom_env.url)
    w = Workload(unique_name("can"), workloads_dir, prom_env)
    w.declare()
    deploy(workload=w.name, trigger=TEST_TRIGGER)
    yield w
    prom_env.exporter.remove(w.name)
    try:
        EngineOrchestrator.from_env().remove(w.spec)
    finally:
        force_remove(w.name)
        orchestrators.reset()


class Sampler:
    """Reads the stable's state every 0.2 s from its own adapter while a canary runs."""

    def __init__(self, spec: WorkloadSpec) -> None:
        self.spec, self.orch = spec, EngineOrchestrator.from_env()
        self.samples: list[tuple[int, int]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(0.2):
            state = self.orch.read(self.spec)
            self.samples.append((state.ready_replicas, state.desired_replicas))

    def finish(self) -> list[tuple[int, int]]:
        self.stop.set()
        self.thread.join(10)
        self.orch.close()
        return self.samples


class Background:
    """The canary flow run in a thread of this process (as `scalewise canary` runs it)."""

    def __init__(self, **params: Any) -> None:
        self.result: ActionRecord | None = None
        self.error: BaseException | None = None
        ctx = contextvars.copy_context()  # the test server's Prefect settings come along
        self.thread = threading.Thread(target=ctx.run, args=(self._run,), kwargs=params, daemon=True)
        self.thread.start()

    def _run(self, **params: Any) -> None:
        try:
            self.result = canary(**params)
        except BaseException as exc:
            self.error = exc

    def join(self, timeout_s: float = 180) -> None:
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), "the canary run did not end"


def paused_run(workload: str) -> FlowRun | None:
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(like_=f"canary-{workload}")))
    return next((r for r in runs if r.state is not None and r.state.is_paused()), None)


def run_state(run_id: str | None) -> Any:
    assert run_id is not None
    with get_client(sync_client=True) as client:
        return client.read_flow_run(uuid.UUID(run_id)).state


def engine_images(name: str) -> tuple[list[str], list[str]]:
    """(stable replica images, canary images) as the engine lists them."""
    group = EngineOrchestrator.from_env().containers.group(name)
    return sorted(b.image for b in group.replicas), sorted(b.image for b in group.canaries)


def test_good_canary_from_the_cli_promotes_and_every_step_is_in_history(wl: Workload, tmp_path: Path) -> None:
    wl.error_ratio(0.01)
    steps = tmp_path / "steps.yaml"
    steps.write_text(yaml.safe_dump({"steps": [{"set_weight": 50}, analysis_step(), {"pause": {"duration": "1s"}}]}))
    done = cli("canary", wl.name, IMAGE_V2, "--file", str(steps))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"canary {wl.name}: succeeded" in done.stdout
    assert engine_images(wl.name) == ([IMAGE_V2, IMAGE_V2], [])
    record = wl.records()[-1]
    assert record.outcome == "succeeded" and record.reason_code == "canary_promoted"
    assert (record.before.image, record.after.image, record.after.ready) == (IMAGE_V1, IMAGE_V2, 2)
    plan = "\n".join(record.plan)
    for expected in ("step 1: set weight 50% (1 canary replicas for 2 stable)",
                     f"step 1: weight 50%: 1/1 canary replicas of {IMAGE_V2} ready", "step 2: analysis",
                     "analysis Successful", "step 3: paused 1s", f"promote: roll the stable to {IMAGE_V2}"):
        assert expected in plan, plan
    assert record.analysis is not None and record.analysis["phase"] == "Successful"
    shown = cli("history", wl.name, "--csv")  # the detail column: the steps, the measurements
    row = next(line for line in shown.stdout.splitlines() if ",canary," in line)
    assert "step 1: weight 50%" in row and "step 3: paused 1s" in row and "error-ratio=[0.01] Successful" in row


def test_bad_canary_aborts_and_the_stable_never_drops_below_desired(wl: Workload) -> None:
    wl.error_ratio(0.5)
    sampler = Sampler(wl.spec)
    try:
        with pytest.raises(AnalysisFailed, match=r"failed \(1\) > failure_limit \(0\)"):
            canary(workload=wl.name, image=IMAGE_V2, steps=steps({"set_weight": 50}, analysis_step(count=3)),
                   trigger=TEST_TRIGGER)
    finally:
        samples = sampler.finish()
    assert len(samples) >= 5, samples
    assert all(ready >= desired == 2 for ready, desired in samples), samples
    assert engine_images(wl.name) == ([IMAGE_V1, IMAGE_V1], [])
    state = EngineOrchestrator.from_env().read(wl.spec)
    assert (state.image, state.revision, state.ready_replicas) == (IMAGE_V1, 1, 2)
    record = wl.records()[-1]
    assert record.outcome == "failed" and record.reason_code == "canary_aborted"
    assert record.analysis is not None and record.analysis["phase"] == "Failed"
    assert any(f"aborted: canary removed; stable 2/2 ready on {IMAGE_V1} (revision 1)" in p for p in record.plan)
    assert "AnalysisFailed" in (record.error or "")
    assert run_state(record.flow_run_id).is_failed()


def test_a_pause_in_the_spec_waits_for_approval_through_the_api_then_promotes(wl: Workload) -> None:
    wl.declare(strategy="canary", steps=[{"set_weight": 50}, {"pause": {}}])
    run = Background(workload=wl.name, image=IMAGE_V2, trigger=TEST_TRIGGER, approval_timeout_s=600)
    paused = wait_for(lambda: paused_run(wl.name), 120, "the canary run to pause for approval")
    assert engine_images(wl.name) == ([IMAGE_V1, IMAGE_V1], [IMAGE_V2])  # the canary serves while it waits
    resume(str(paused.id), approve=True, comment="canary looks fine", approver="alice")
    run.join()
    assert run.error is None and run.result is not None
    assert run.result.outcome == "succeeded"
    assert run.result.approval is not None and (run.result.approval.approver, run.result.approval.approved) == (
        "alice", True)
    assert any("step 2: approved by alice: canary looks fine" in p for p in run.result.plan)
    assert engine_images(wl.name) == ([IMAGE_V2, IMAGE_V2], [])


def test_an_unanswered_approval_aborts_the_canary(wl: Workload) -> None:
    with pytest.raises(CanaryFailed, match="nobody answered within 3s"):
        canary(workload=wl.name, image=IMAGE_V2, steps=steps({"set_weight": 50}, {"pause": {}}),
               approval_timeout_s=3, trigger=TEST_TRIGGER)
    assert engine_images(wl.name) == ([IMAGE_V1, IMAGE_V1], [])
    record = wl.records()[-1]
    assert record.outcome == "failed" and record.approval is not None and record.approval.timed_out
    assert run_state(record.flow_run_id).is_failed()


def test_bad_canary_parameters_fail_naming_the_field_and_change_nothing(wl: Workload) -> None:
    with pytest.raises(ParameterTypeError, match=r"steps[\s\S]*below the previous weight 50"):
        canary(workload=wl.name, image=IMAGE_V2, steps=[{"set_weight": 50}, {"set_weight": 20}],  # type: ignore[list-item]
               trigger=TEST_TRIGGER)
    with pytest.raises(SpecError, match=r"steps: workload .* declares no canary"):
        canary(workload=wl.name, image=IMAGE_V2, trigger=TEST_TRIGGER)  # a rolling workload, no steps given
    assert engine_images(wl.name) == ([IMAGE_V1, IMAGE_V1], [])


def test_promote_and_abort_from_the_cli(wl: Workload) -> None:
    orch = EngineOrchestrator.from_env()
    none = cli("abort", wl.name)
    assert none.returncode == 0 and "noop" in none.stdout, none.stdout + none.stderr
    orch.set_canary(wl.spec, wl.spec.with_image(IMAGE_V2), 50)  # a canary left behind
    status = cli("status", wl.name)
    assert f"canary {IMAGE_V2} at 50%: 1/1 ready" in " ".join(status.stdout.split()), status.stdout
    aborted = cli("abort", wl.name)
    assert aborted.returncode == 0 and f"abort {wl.name}: succeeded" in aborted.stdout, aborted.stdout + aborted.stderr
    assert engine_images(wl.name) == ([IMAGE_V1, IMAGE_V1], [])
    nothing = cli("promote", wl.name)
    assert nothing.returncode == 1 and "no canary to promote" in nothing.stdout + nothing.stderr
    orch.set_canary(wl.spec, wl.spec.with_image(IMAGE_V2), 50)
    promoted = cli("promote", wl.name)
    assert promoted.returncode == 0 and f"promote {wl.name}: succeeded" in promoted.stdout, promoted.stdout
    assert engine_images(wl.name) == ([IMAGE_V2, IMAGE_V2], [])
    assert [r.outcome for r in wl.records("abort")] == ["noop", "succeeded"]
