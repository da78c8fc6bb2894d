"""The threshold path end to end, and the served schedule: a real crossing seen in a real Prometheus,
the watcher's event, the deployment trigger declared in prefect.yaml (served by deployments/serve.py),
the ``autoscale`` run it starts, the Swarm service it scales."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId, FlowRunFilter
from prefect.client.schemas.objects import FlowRun
from prefect.client.schemas.sorting import FlowRunSort

from flows.deploy import deploy
from scalewise import autoscaler, history, orchestrators
from scalewise.audit import Trigger
from scalewise.local import LocalServer
from scalewise.spec import load_workloads
from scalewise.watcher import EVENT, Crossing, Watcher, prefect_emitter
from tests.support.docker_env import unique_name
from tests.support.prefect_env import Served
from tests.support.procs import wait_for
from tests.support.prom_env import PromEnv
from tests.test_autoscale_flow import QUERY, spec_doc

# Each test makes several load-stretched waits in a row (tests.support.procs.MAX_STRETCH).
pytestmark = [pytest.mark.swarm, pytest.mark.prefect, pytest.mark.prom, pytest.mark.timeout(1200)]

ROOT = Path(__file__).resolve().parents[1]
PROJECT = yaml.safe_load((ROOT / "prefect.yaml").read_text())
AUTOSCALE = next(d for d in PROJECT["deployments"] if d["entrypoint"] == "flows/autoscale.py:autoscale")
DEPLOYMENT = "autoscale/scalewise"


def all_declared_triggers() -> list[tuple[str, dict[str, Any]]]:
    return [(d["entrypoint"], t) for d in PROJECT["deployments"] for t in d.get("triggers") or []]


def replicas(name: str) -> int:
    svc = docker.from_env().services.get(name)
    return int(svc.attrs["Spec"]["Mode"]["Replicated"]["Replicas"])


def set_load(prom: PromEnv, name: str, value: float) -> None:
    prom.exporter.set(name, value)
    prom.wait_for_value(QUERY.replace("{workload}", name), value, timeout=20)


def runs_of(deployment_id: Any) -> list[FlowRun]:
    with get_client(sync_client=True) as client:
        return client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
            flow_run_filter=FlowRunFilter(),
            sort=FlowRunSort.EXPECTED_START_TIME_ASC,
        )


@pytest.fixture()
def workload(
    docker_engine: None, prefect_server: LocalServer, prom_env: PromEnv, workloads_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[str]:
    name = unique_name("trig")
    monkeypatch.setenv("SCALEWISE_PROMETHEUS_URL", prom_env.url)
    (workloads_dir / f"{name}.yaml").write_text(yaml.safe_dump(spec_doc(name)))
    set_load(prom_env, name, 0.5)
    deploy(workload=name, reason="test deploy", trigger=Trigger(kind="api", actor="test"))
    try:
        yield name
    finally:
        prom_env.exporter.remove(name)
        for svc in docker.from_env().services.list(filters={"name": name}):
            svc.remove()
        orchestrators.reset()
        autoscaler.reset_sources()


@pytest.fixture()
def served(
    prefect_server: LocalServer, workloads_dir: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Served]:
    srv = Served(prefect_server.api_url, workloads_dir, tmp_path / "serve.log")
    try:
        srv.wait_registered([DEPLOYMENT])
        yield srv
    finally:
        srv.stop()


def test_every_declared_trigger_is_known_and_served(
    monkeypatch: pytest.MonkeyPatch, prefect_server: LocalServer, workloads_dir: Path, tmp_path: Path
) -> None:
    declared = all_declared_triggers()
    autoscale_triggers = [t for e, t in declared if e == AUTOSCALE["entrypoint"]]
    # the one trigger of the autoscale deployment is exercised end to end below
    assert [t["name"] for t in autoscale_triggers] == ["scalewise-threshold-crossed"]
    assert autoscale_triggers[0]["expect"] == [EVENT]
    monkeypatch.setenv("SCALEWISE_AUTOSCALE_INTERVAL", "off")
    srv = Served(prefect_server.api_url, workloads_dir, tmp_path / "serve.log")
    try:
        srv.wait_registered([DEPLOYMENT])
        with get_client(sync_client=True) as client:
            for _entrypoint, trig in declared:  # the served path applies every declared trigger
                found = client.read_automations_by_name(trig["name"])
                assert found, f"trigger {trig['name']!r} not applied by serve.py"
                assert found[0].enabled == trig.get("enabled", True)
            dep = client.read_deployment_by_name(DEPLOYMENT)
            schedules = client.read_deployment_schedules(dep.id)
        assert len(schedules) == 1 and not schedules[0].active  # declared, switched off by the env override
    finally:
        srv.stop()


def test_threshold_crossing_starts_an_autoscale_run_for_that_workload(
    workload: str, prom_env: PromEnv, workloads_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    prefect_server: LocalServer,
) -> None:
    monkeypatch.setenv("SCALEWISE_AUTOSCALE_INTERVAL", "off")  # only the trigger may start runs here
    srv = Served(prefect_server.api_url, workloads_dir, tmp_path / "serve.log")
    try:
        srv.wait_registered([DEPLOYMENT])
        with get_client(sync_client=True) as client:
            dep = client.read_deployment_by_name(DEPLOYMENT)
        known = {r.id for r in runs_of(dep.id)}

        emitted: list[Crossing] = []
        emit = prefect_emitter()

        def record(c: Crossing) -> None:
            emit(c)
            emitted.append(c)

        watcher = Watcher(lambda: load_workloads(workloads_dir), record, workloads=[workload])
        assert watcher.tick() == []  # 0.5 per replica: below target but already at min -> nothing
        set_load(prom_env, workload, 40.0)  # 40 total / 10 per replica -> 4 replicas
        (crossing,) = watcher.tick()
        assert (crossing.workload, crossing.metric, crossing.direction) == (workload, "load", "up")
        assert crossing.value == 40.0 and crossing.threshold == pytest.approx(11.0)
        assert watcher.tick() == []  # edge-triggered: no second event while nothing changed

        def new_run() -> FlowRun | None:
            fresh = [r for r in runs_of(dep.id) if r.id not in known]
            return fresh[0] if fresh else None

        run = wait_for(new_run, 60, "an autoscale run started by the trigger", srv.log)
        assert run.parameters["workloads"] == [workload]
        assert run.parameters["trigger"]["kind"] == "automation"
        assert run.parameters["trigger"]["actor"] == "scalewise-watcher"
        assert run.parameters["observed_at"] == crossing.observed_at.isoformat()
        assert run.parameters["reason"] == "threshold crossed: load up"
        assert run.created_by is not None and (run.created_by.type or "").upper() == "AUTOMATION"

        def finished() -> FlowRun | None:
            with get_client(sync_client=True) as client:
                r = client.read_flow_run(run.id)
            return r if r.state is not None and r.state.is_final() else None

        final = wait_for(finished, 90, "the triggered run to finish", srv.log)
        assert final.state.is_completed(), final.state
        assert replicas(workload) == 4
        (act,) = [e.record for e in history.fetch(workload) if e.record.operation == "autoscale"]
        assert act.trigger.kind == "automation" and act.trigger.actor == "scalewise-watcher"
        assert act.flow_run_id == str(run.id)
        assert (act.before.replicas, act.after.replicas, act.reason_code) == (1, 4, "scale_up")
        assert act.observed_at is not None and act.observed_at == crossing.observed_at
        assert act.decision is not None
        # at 4 replicas the load is on target: no new crossing; the rule is re-armed
        assert watcher.tick() == []
        assert len(emitted) == 1
        assert [r.id for r in runs_of(dep.id) if r.id not in known] == [run.id]
    finally:
        srv.stop()


def test_the_served_interval_schedule_runs_the_autoscaler(
    workload: str, prom_env: PromEnv, workloads_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    prefect_server: LocalServer,
) -> None:
    monkeypatch.setenv("SCALEWISE_AUTOSCALE_INTERVAL", "3s")
    set_load(prom_env, workload, 40.0)
    srv = Served(prefect_server.api_url, workloads_dir, tmp_path / "serve.log")
    try:
        srv.wait_registered([DEPLOYMENT])

        def scaled() -> Any:
            acts = [
                e.record for e in history.fetch(workload)
                if e.record.operation == "autoscale" and e.record.outcome != "in_progress"  # finished only
            ]
            return acts or None

        (act,) = wait_for(scaled, 90, "a scheduled autoscale run to act", srv.log)
        assert act.trigger.kind == "schedule"
        assert act.observed_at is not None  # a scheduled run observes when it starts (late or not)
        assert (act.before.replicas, act.after.replicas) == (1, 4)
        assert replicas(workload) == 4
    finally:
        srv.stop()


def test_watcher_edges_rearm_repeat_and_explicit_rules(
    prom_env: PromEnv, workloads_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from scalewise.watcher import parse_rule

    name = unique_name("wt")
    monkeypatch.setenv("SCALEWISE_PROMETHEUS_URL", prom_env.url)
    (workloads_dir / f"{name}.yaml").write_text(yaml.safe_dump(spec_doc(name)))
    count = {"n": 2}
    events: list[Crossing] = []
    watcher = Watcher(
        lambda: load_workloads(workloads_dir), events.append, workloads=[name], replicas=lambda _s: count["n"],
        rules=[parse_rule(f"{name}:load>100")], repeat_s=3.0,
    )

    def fired() -> list[tuple[str, bool]]:
        return [(c.direction, c.explicit) for c in watcher.tick()]

    try:
        set_load(prom_env, name, 20.0)  # 10 per replica: on target
        assert fired() == []
        set_load(prom_env, name, 30.0)  # 15 per replica > 11
        assert fired() == [("up", False)]
        assert fired() == []  # edge-triggered
        count["n"] = 3  # scaled: 10 per replica, back inside the band -> re-armed
        assert fired() == []
        count["n"] = 2
        assert fired() == [("up", False)]
        time.sleep(3.2)
        assert fired() == [("up", False)]  # still above after repeat_s: fires again
        set_load(prom_env, name, 4.0)  # 2 per replica < 9, and above min: scale-in candidate
        assert fired() == [("down", False)]
        count["n"] = 1  # at min: a scale-in is impossible, nothing to report
        assert fired() == []
        count["n"] = 2
        set_load(prom_env, name, 250.0)  # derived up and the explicit rule (125 > 100)
        assert sorted(fired()) == [("up", False), ("up", True)]
        c = events[-1]
        assert c.payload()["observed_at"] == c.observed_at.isoformat()
        assert c.resource() == {"prefect.resource.id": f"scalewise.workload.{name}", "prefect.resource.name": name}
        # a failed read never fires (and never raises)
        monkeypatch.setenv("SCALEWISE_PROMETHEUS_URL", "http://127.0.0.1:9")
        autoscaler.reset_sources()
        count["n"] = 3
        assert fired() == []
    finally:
        prom_env.exporter.remove(name)
        autoscaler.reset_sources()
    with pytest.raises(ValueError, match="WORKLOAD:METRIC"):
        parse_rule("web load > 3")
