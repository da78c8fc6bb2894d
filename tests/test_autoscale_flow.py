"""The ``autoscale`` flow end to end: a real Prefect server, a real Prometheus scraping a controllable
exporter, a real single-node Swarm service. No mocks: the metric moves in Prometheus, the service
moves in Swarm, the history and the policy state live in Prefect."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import docker
import pytest
import yaml

from flows.autoscale import autoscale
from flows.autoscale_loop import plan
from flows.deploy import deploy
from scalewise import autoscaler, history, orchestrators
from scalewise.audit import Trigger
from scalewise.autoscaler import Result
from scalewise.errors import StaleObservation
from scalewise.local import LocalServer
from scalewise.policy.record import DecisionRecord, replay
from tasks.policy_state import load_state
from tests.support.docker_env import IMAGE_V1, health_check, unique_name
from tests.support.prom_env import PromEnv, start_prometheus

pytestmark = [pytest.mark.swarm, pytest.mark.prefect, pytest.mark.prom]

#: Long enough that ticks on a loaded 2-core machine (one autoscale run can take ~8 s there) land inside it.
DOWN_WINDOW = 30.0
QUERY = 'sum(scalewise_test_load{workload="{workload}"})'


def spec_doc(name: str, *, fallback: int | str = "hold", initial: int = 1) -> dict[str, Any]:
    return {
        "name": name,
        "target": "swarm",
        "image": IMAGE_V1,
        "healthcheck": health_check(),
        "replicas": {"min": 1, "max": 5, "initial": initial},
        "stop_grace_period": "1s",
        "autoscaling": {
            # a total spread over the replicas: 10 per replica
            "metrics": [{"name": "load", "query": QUERY, "type": "average_value", "target": 10}],
            "tolerance": 0.1,
            "behavior": {
                "scale_up": {"stabilization_window": 0, "policies": [{"type": "pods", "value": 4, "period": 15}]},
                "scale_down": {
                    "stabilization_window": f"{DOWN_WINDOW:g}s",
                    "policies": [{"type": "percent", "value": 100, "period": 15}],
                },
            },
            "fallback": {"failure_threshold": 3, "replicas": fallback},
        },
    }


class Env:
    def __init__(self, name: str, prom: PromEnv) -> None:
        self.name = name
        self.prom = prom

    def load(self, value: float) -> None:
        """Set the exporter and wait until Prometheus answers the query with it."""
        self.prom.exporter.set(self.name, value)
        self.prom.wait_for_value(QUERY.replace("{workload}", self.name), value, timeout=20)

    def replicas(self) -> int:
        svc = docker.from_env().services.get(self.name)
        return int(svc.attrs["Spec"]["Mode"]["Replicated"]["Replicas"])

    def tick(self, **kw: Any) -> Result:
        results = autoscale(workloads=[self.name], **kw)
        assert len(results) == 1, results
        return results[0]

    def actions(self) -> list[Any]:
        return [e.record for e in history.fetch(self.name) if e.record.operation == "autoscale"]


def _make(
    name: str, prom: PromEnv, workloads_dir: Path, monkeypatch: pytest.MonkeyPatch, **doc: Any
) -> Env:
    monkeypatch.setenv("SCALEWISE_PROMETHEUS_URL", prom.url)
    (workloads_dir / f"{name}.yaml").write_text(yaml.safe_dump(spec_doc(name, **doc)))
    env = Env(name, prom)
    env.load(0.5 if doc.get("initial", 1) == 1 else 10.0 * doc["initial"])
    deploy(workload=name, reason="test deploy", trigger=Trigger(kind="api", actor="test"))
    return env


def _cleanup(name: str, prom: PromEnv) -> None:
    prom.exporter.remove(name)
    for svc in docker.from_env().services.list(filters={"name": name}):
        svc.remove()
    orchestrators.reset()
    autoscaler.reset_sources()


@pytest.fixture()
def env(
    docker_engine: None, prefect_server: LocalServer, prom_env: PromEnv, workloads_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Env]:
    name = unique_name("as")
    try:
        yield _make(name, prom_env, workloads_dir, monkeypatch)
    finally:
        _cleanup(name, prom_env)


def test_scale_out_then_scale_in_only_after_the_stabilization_window(env: Env) -> None:
    env.load(35.0)  # 35 / 10 per replica -> 4
    up = env.tick()
    assert (up.outcome, up.current, up.desired, up.reason) == ("scaled", 1, 4, "scale_up")
    assert env.replicas() == 4
    assert up.at is not None
    high_at = up.at

    env.load(10.0)  # -> 1, but the window still holds the recommendation of 4
    held: list[Result] = []
    down: Result | None = None
    deadline = time.monotonic() + DOWN_WINDOW + 60
    while time.monotonic() < deadline:
        r = env.tick()
        assert r.at is not None
        if r.outcome == "scaled":
            down = r
            break
        assert r.outcome == "unchanged" and env.replicas() == 4
        held.append(r)
        time.sleep(0.5)
    assert down is not None, "never scaled in"
    assert held and all(h.reason == "stabilized_down" for h in held)
    assert all((h.at - high_at).total_seconds() < DOWN_WINDOW for h in held if h.at)
    assert down.at is not None and (down.at - high_at).total_seconds() >= DOWN_WINDOW
    assert (down.current, down.desired) == (4, 1)
    assert env.replicas() == 1

    acts = env.actions()
    assert [(a.before.replicas, a.after.replicas, a.reason_code) for a in acts] == [
        (1, 4, "scale_up"), (4, 1, "scale_down"),
    ]
    assert all(a.trigger.kind == "api" and a.decision and a.outcome == "succeeded" for a in acts)
    # the stored decision record replays to the same decision
    for a in acts:
        rec = DecisionRecord.model_validate(a.decision)
        assert rec.workload == env.name
        assert replay(rec) == rec.decision
        assert rec.decision.desired == a.after.replicas


def test_oscillating_metric_does_not_thrash(env: Env) -> None:
    for i in range(8):
        env.load(35.0 if i % 2 == 0 else 10.0)
        env.tick()
        time.sleep(0.3)
    acts = env.actions()
    assert [(a.before.replicas, a.after.replicas) for a in acts] == [(1, 4)]
    assert env.replicas() == 4


def test_failed_metrics_hold_then_fallback(
    docker_engine: None, prefect_server: LocalServer, prom_env: PromEnv, workloads_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    name = unique_name("asfb")
    with start_prometheus(prom_env.exporter) as own:
        try:
            env = _make(name, own, workloads_dir, monkeypatch, fallback=4, initial=2)
            assert env.replicas() == 2
            env.load(5.0)  # would propose 1 replica
            own.stop(keep_dir=True)
            autoscaler.reset_sources()
            first, second = env.tick(), env.tick()
            for r in (first, second):
                assert (r.outcome, r.reason, r.desired) == ("unchanged", "missing_metrics_hold", 2)
                assert r.decision is not None
                failed = r.decision["decision"]["inputs"]["readings"][0]
                assert failed["outcome"] == "error" and failed["error"] == "connection"
            assert env.replicas() == 2
            third = env.tick()
            assert (third.outcome, third.reason, third.current, third.desired) == ("scaled", "fallback", 2, 4)
            assert env.replicas() == 4
            stored = load_state(name)
            assert stored is not None and stored.consecutive_failures == 3
        finally:
            _cleanup(name, own)


def test_policy_state_survives_a_restart(env: Env) -> None:
    env.load(35.0)
    up = env.tick()
    assert up.outcome == "scaled" and up.at is not None
    stored = load_state(env.name)
    assert stored is not None and any(r.replicas == 4 and r.at == up.at for r in stored.recommendations)
    assert [e.change for e in stored.scale_events] == [3]

    # restart: forget every in-process cache (orchestrator clients, metric sources)
    orchestrators.reset()
    autoscaler.reset_sources()
    env.load(10.0)
    after = env.tick()
    assert (after.outcome, after.reason) == ("unchanged", "stabilized_down")
    assert after.decision is not None
    before = after.decision["state_before"]
    assert any(r["replicas"] == 4 and datetime.fromisoformat(r["at"]) == up.at for r in before["recommendations"])
    assert env.replicas() == 4


def test_stale_observation_is_refused(env: Env) -> None:
    env.load(35.0)
    old = datetime.now(UTC) - timedelta(minutes=10)
    with pytest.raises(StaleObservation):
        env.tick(observed_at=old, max_observation_age_s=60)
    assert env.replicas() == 1
    (act,) = env.actions()
    assert act.outcome == "failed" and "StaleObservation" in (act.error or "")
    stored = load_state(env.name)
    assert stored is not None and stored.scale_events == []  # the refused scale is not remembered
    fresh = env.tick(observed_at=datetime.now(UTC), max_observation_age_s=60)
    assert fresh.outcome == "scaled" and env.replicas() == 4


def test_dry_run_and_plan_change_nothing(env: Env) -> None:
    env.load(35.0)
    before = load_state(env.name)
    r = env.tick(dry_run=True)
    assert (r.outcome, r.current, r.desired, r.reason) == ("planned", 1, 4, "scale_up")
    (p,) = plan([env.name])
    assert (p.outcome, p.current, p.desired, p.reason) == ("planned", 1, 4, "scale_up")
    assert any("metric:load" in s for s in p.steps)
    assert env.replicas() == 1
    assert load_state(env.name) == before
    (act,) = env.actions()
    assert act.outcome == "planned" and act.dry_run and act.plan[0].startswith("would set replicas 1 -> 4")
    assert act.decision is not None


def test_orchestrator_read_errors_hold(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    env.load(5.0)
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:9")  # nothing listens: connection refused
    orchestrators.reset()
    with pytest.raises(Exception, match=r"unreachable|refused|Connection"):
        env.tick()
    monkeypatch.delenv("DOCKER_HOST")
    orchestrators.reset()
    assert env.replicas() == 1
    assert env.actions() == []
    assert load_state(env.name) is None  # nothing decided, nothing saved


def test_workloads_without_autoscaling_are_skipped(env: Env, workloads_dir: Path) -> None:
    doc = spec_doc("plain-one")
    del doc["autoscaling"]
    (workloads_dir / "plain-one.yaml").write_text(yaml.safe_dump(doc))
    results = autoscale(workloads=["plain-one", "no-such-one"])
    assert [(r.workload, r.outcome, r.reason) for r in results] == [
        ("plain-one", "skipped", "no autoscaling section"), ("no-such-one", "skipped", "unknown workload"),
    ]


def _autoscale_runs(name: str) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["autoscale"])), limit=200)
    return [r for r in runs if r.parameters.get("workloads") == [name]]


def test_fast_loop_acts_in_process_and_starts_no_run_while_idle(env: Env) -> None:
    from flows.autoscale_loop import run_loop

    seen: list[list[Result] | None] = []
    assert run_loop(0.5, [env.name], max_ticks=3, on_tick=lambda _n, r: seen.append(r)) == 3
    assert [[r.outcome for r in (res or [])] for res in seen] == [["unchanged"]] * 3
    first, second = (res[0] for res in seen[:2] if res)
    assert second.decision is not None and first.at is not None  # tick 2 read what tick 1 saved
    assert any(datetime.fromisoformat(r["at"]) == first.at for r in second.decision["state_before"]["recommendations"])
    assert _autoscale_runs(env.name) == []  # idle ticks: no flow run, no action record
    assert env.actions() == []
    assert load_state(env.name) is not None  # but the state is persisted every tick

    env.load(35.0)
    t0 = time.monotonic()
    seen.clear()
    run_loop(0.5, [env.name], max_ticks=1, on_tick=lambda _n, r: seen.append(r))
    assert time.monotonic() - t0 < 30
    assert [(r.outcome, r.desired) for r in seen[0] or []] == [("scaled", 4)]
    assert env.replicas() == 4
    (act,) = env.actions()
    assert act.trigger.kind == "autoscaler" and act.observed_at is not None and act.reason_code == "scale_up"
    (run,) = _autoscale_runs(env.name)
    assert run.parameters["trigger"]["kind"] == "autoscaler"


def test_cli_plan_json_and_autoscaler_with_self_metrics(env: Env) -> None:
    import json
    import re
    import urllib.request

    from typer.testing import CliRunner

    from scalewise import selfmetrics
    from scalewise.cli import app

    env.load(35.0)
    runner = CliRunner()
    res = runner.invoke(app, ["plan", env.name, "--json"])
    assert res.exit_code == 0, res.output
    (p,) = json.loads(res.stdout)
    assert (p["workload"], p["current"], p["desired"], p["reason"]) == (env.name, 1, 4, "scale_up")
    steps = p["decision"]["decision"]["steps"]
    assert [s["reason"] for s in steps] == ["bounds", "scale_up", "scale_up"]
    human = runner.invoke(app, ["plan", env.name])
    assert human.exit_code == 0 and "scale 1 -> 4 (scale_up)" in human.output and "metric:load" in human.output
    assert env.replicas() == 1 and env.actions() == []  # plan writes nothing

    res = runner.invoke(
        app, ["autoscaler", "--workload", env.name, "--interval", "1s", "--max-ticks", "2", "--metrics-port", "0"]
    )
    assert res.exit_code == 0, res.output
    assert env.replicas() == 4
    port = int(re.search(r"127\.0\.0\.1:(\d+)/metrics", res.output).group(1))  # type: ignore[union-attr]
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            text = resp.read().decode()
    finally:
        selfmetrics.stop(port)
    assert f'scalewise_autoscaler_decisions_total{{changed="true",reason="scale_up",workload="{env.name}"}}' in text
    assert f'scalewise_autoscaler_actions_total{{direction="up",outcome="scaled",workload="{env.name}"}} 1.0' in text
    assert "scalewise_autoscaler_evaluation_seconds_bucket" in text
    assert "scalewise_autoscaler_tick_seconds_count" in text
    assert f'scalewise_autoscaler_desired_replicas{{workload="{env.name}"}} 4.0' in text


def test_example_web_workload_reads_docker_cpu_and_holds_scale_in(
    docker_engine: None, prefect_server: LocalServer, workloads_dir: Path
) -> None:
    root = Path(__file__).resolve().parents[1]
    doc = yaml.safe_load((root / "workloads" / "web.yaml").read_text())
    name = unique_name("web")
    doc["name"] = name
    (workloads_dir / f"{name}.yaml").write_text(yaml.safe_dump(doc))
    try:
        deploy(workload=name, trigger=Trigger(kind="api", actor="test"))
        (p,) = plan([name])
        assert p.outcome == "planned" and p.current == 2
        assert p.decision is not None
        (reading,) = p.decision["decision"]["inputs"]["readings"]
        assert reading["outcome"] == "ok" and len(reading["values"]) == 2  # one CPU % per container
        # idle busybox: far below 60% -> would scale in, but never before the 5 minute window
        assert (p.desired, p.reason) == (2, "stabilized_down")
        (r,) = autoscale(workloads=[name])
        assert (r.outcome, r.desired) == ("unchanged", 2)
    finally:
        from scalewise.settings import workloads_path
        from scalewise.spec import get_workload

        orchestrators.for_target("docker").remove(get_workload(workloads_path(), name))
        orchestrators.reset()
        autoscaler.reset_sources()
