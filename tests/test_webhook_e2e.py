"""End to end: Prometheus alert rule -> Alertmanager -> webhook receiver -> Prefect deployment run
(served by deployments/serve.py) -> Swarm service scaled -> action record with trigger ``webhook``.

Everything is real: Prometheus and Alertmanager binaries, uvicorn, the Prefect server, the runner
subprocess and the single-node Swarm. Waits are bounded; the service and processes are removed after.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest
import yaml

from scalewise import history, orchestrators
from scalewise.audit import Trigger
from scalewise.local import LocalServer
from scalewise.webhook.app import create_app
from scalewise.webhook.config import Credentials, parse_config
from tests.support.alertmanager_env import start_alertmanager
from tests.support.docker_env import IMAGE_V1, health_check, unique_name
from tests.support.prefect_env import Served
from tests.support.procs import wait_until
from tests.support.prom_env import start_prometheus
from tests.support.webhook_env import UvicornThread

# Each test makes several load-stretched waits in a row (tests.support.procs.MAX_STRETCH).
pytestmark = [pytest.mark.swarm, pytest.mark.prefect, pytest.mark.prom, pytest.mark.timeout(1500)]

TOKEN = "e2e-alertmanager-token-5f2c"
ALERT = "ScalewiseE2EHighLoad"
WAIT_S = 180  # a served run spawns a process: 20 s and more on a loaded 2-core machine


wait_for = functools.partial(wait_until, timeout_s=WAIT_S)


def replicas(name: str) -> int:
    client = docker.from_env()
    try:
        return int(client.services.get(name).attrs["Spec"]["Mode"]["Replicated"]["Replicas"])
    finally:
        client.close()


@pytest.fixture()
def swarm_workload(docker_engine: None, prefect_server: LocalServer, workloads_dir: Path) -> Iterator[str]:
    from flows.deploy import deploy

    name = unique_name("wh")
    spec = {
        "name": name,
        "target": "swarm",
        "image": IMAGE_V1,
        "healthcheck": health_check(),
        "replicas": {"min": 1, "max": 4, "initial": 1},
        "update": {"parallelism": 1, "order": "start-first", "monitor": "2s", "timeout": "60s"},
        "stop_grace_period": "1s",
    }
    (workloads_dir / f"{name}.yaml").write_text(yaml.safe_dump(spec))
    try:
        deploy(workload=name, reason="e2e setup", trigger=Trigger(kind="api", actor="test"))
        assert replicas(name) == 1
        yield name
    finally:
        client = docker.from_env()
        for svc in client.services.list(filters={"name": name}):
            svc.remove()
        client.close()
        orchestrators.reset()


def test_alert_scales_a_swarm_service_out_and_back_in(
    swarm_workload: str, prefect_server: LocalServer, workloads_dir: Path, tmp_path: Path
) -> None:
    name = swarm_workload
    served = Served(prefect_server.api_url, workloads_dir, tmp_path / "serve.log")
    receiver: UvicornThread | None = None
    try:
        served.wait_registered(["scale-out/scalewise", "scale-in/scalewise"])
        config = parse_config({
            "callers": [{"name": "alertmanager", "token_env": "UNUSED", "endpoints": ["alertmanager"],
                         "allow_actions": ["scale-out", "scale-in"], "allow_workloads": ["wh-*"]}],
            "routes": [{"name": "e2e-load", "match": {"alertname": ALERT}, "workload_label": "workload",
                        "on_firing": {"action": "scale-out", "by": 1},
                        "on_resolved": {"action": "scale-in", "by": 1}}],
        })
        app = create_app(config, {"alertmanager": Credentials.model_validate({"token": TOKEN})},
                         workloads=workloads_dir)
        receiver = UvicornThread(app).start()
        with (
            start_alertmanager(f"{receiver.url}/v1/alertmanager", TOKEN) as am,
            start_prometheus(alertmanagers=[am.address]) as prom,
        ):
            def logs() -> str:
                return (f"--- serve.py\n{served.log.read_text(errors='replace')[-3000:]}\n"
                        f"--- alertmanager\n{am.log_tail()}\n--- prometheus\n{prom.log_tail()}")

            prom.set_rules({"groups": [{"name": "scalewise-e2e", "interval": "1s", "rules": [{
                "alert": ALERT,
                "expr": f'scalewise_test_load{{workload="{name}"}} > 10',
                "for": "0s",
                "annotations": {"summary": f"{name} load above 10"},
            }]}]})
            prom.exporter.set(name, 50.0)
            t0 = time.monotonic()
            wait_for(lambda: replicas(name) == 2, "the alert to scale the service out to 2", logs=logs)
            fired_to_scaled = time.monotonic() - t0

            def recorded(operation: str) -> Any:
                # the finished record (an in_progress one is written before the first write)
                return next((e.record for e in history.fetch(name)
                             if e.record.operation == operation and e.record.outcome != "in_progress"), None)

            out = wait_for(lambda: recorded("scale-out"), "the scale-out action record", logs=logs)
            assert out.trigger.kind == "webhook" and out.trigger.actor == "alertmanager"
            assert out.trigger.detail and ALERT in out.trigger.detail
            assert out.outcome == "succeeded" and (out.before.replicas, out.after.replicas) == (1, 2)
            assert out.reason == f"{name} load above 10" and out.observed_at is not None

            prom.exporter.set(name, 0.0)
            wait_for(lambda: replicas(name) == 1, "the resolved alert to scale the service back in", logs=logs)
            back = wait_for(lambda: recorded("scale-in"), "the scale-in action record", logs=logs)
            assert back.trigger.kind == "webhook" and back.trigger.actor == "alertmanager"
            assert (back.before.replicas, back.after.replicas) == (2, 1)

            # Alertmanager may re-send; the receiver starts one run per alert instance and status
            time.sleep(3)
            ops = [e.record.operation for e in history.fetch(name) if e.record.trigger.kind == "webhook"]
            assert ops == ["scale-out", "scale-in"], ops
            metrics = httpx.get(f"{receiver.url}/metrics").text
            assert 'scalewise_webhook_runs_started_total{deployment="scale-out/scalewise"} 1.0' in metrics
            print(f"alert raised -> service scaled out: {fired_to_scaled:.1f}s")
    finally:
        if receiver is not None:
            receiver.stop()
        served.stop()


def test_queued_absolute_requests_coalesce_into_the_last_one(
    swarm_workload: str, prefect_server: LocalServer, workloads_dir: Path, tmp_path: Path
) -> None:
    """Requests accepted while no runner runs: the absolute ones (scale to N) coalesce into the last,
    the older ones end Cancelled naming the run that superseded them; a relative one (scale-out) is
    never cancelled. When the runner starts, the last absolute and the relative run act, the
    cancelled ones never start, and every accepted request's run ends in a final state."""
    from prefect.client.orchestration import get_client

    from tests.support.prefect_env import forget_project_deployments
    from tests.support.webhook_env import register_deployments

    name = swarm_workload
    token = "e2e-ops-token-" + name
    served: Served | None = None
    receiver: UvicornThread | None = None
    try:
        register_deployments("scalewise")  # the runs are queued against the deployments serve.py serves
        config = parse_config({"callers": [{"name": "ops", "token_env": "UNUSED", "allow_workloads": ["wh-*"]}]})
        receiver = UvicornThread(create_app(config, {"ops": Credentials.model_validate({"token": token})},
                                            workloads=workloads_dir)).start()
        headers = {"Authorization": f"Bearer {token}"}
        sent: dict[str, dict[str, Any]] = {}
        for key, body in (("first", {"action": "scale", "replicas": 2}), ("second", {"action": "scale", "replicas": 4}),
                          ("step", {"action": "scale-out", "by": 1}), ("last", {"action": "scale", "replicas": 3})):
            resp = httpx.post(f"{receiver.url}/v1/actions", json={"workload": name, **body}, timeout=60,
                              headers={**headers, "Idempotency-Key": f"{key}-{name}"})
            assert resp.status_code == 202, resp.text
            sent[key] = resp.json()
        ids = {key: out["flow_run_id"] for key, out in sent.items()}
        assert sent["second"]["supersedes"] == [ids["first"]] and sent["last"]["supersedes"] == [ids["second"]]

        served = Served(prefect_server.api_url, workloads_dir, tmp_path / "serve.log")

        def logs() -> str:
            return f"--- serve.py\n{served.log.read_text(errors='replace')[-4000:]}" if served else ""

        def final_states() -> dict[str, Any] | None:
            with get_client(sync_client=True) as client:
                states = {key: client.read_flow_run(run_id).state for key, run_id in ids.items()}
            return states if all(s is not None and s.is_final() for s in states.values()) else None

        states = wait_for(final_states, "every accepted request's run to end", logs=logs)
        assert {key: s.type.value for key, s in states.items()} == {
            "first": "CANCELLED", "second": "CANCELLED", "step": "COMPLETED", "last": "COMPLETED"}, logs()
        assert states["first"].message.startswith(f"superseded by request second-{name}/run {ids['second']}")
        assert states["second"].message.startswith(f"superseded by request last-{name}/run {ids['last']}")

        records = [e.record for e in history.fetch(name) if e.record.trigger.kind == "webhook"]
        by_run = {str(r.flow_run_id): r for r in records}
        assert set(by_run) == {ids["step"], ids["last"]}, records  # the cancelled runs never started
        scaled = by_run[ids["last"]]
        assert scaled.operation == "scale" and scaled.outcome == "succeeded" and scaled.after.replicas == 3
        assert by_run[ids["step"]].outcome == "succeeded"
        last_written = max(records, key=lambda r: r.finished_at)
        assert replicas(name) == last_written.after.replicas  # scale-out and scale ran in lock order
    finally:
        if receiver is not None:
            receiver.stop()
        if served is not None:
            served.stop()
        else:
            forget_project_deployments()


def test_inline_actions_run_in_the_receiver_in_order_with_no_runner(
    swarm_workload: str, prefect_server: LocalServer, workloads_dir: Path
) -> None:
    """With ``run_inline``, the receiver executes the scaling runs itself: no runner serves these
    deployments, yet each accepted scale acts, as a Completed run of its deployment with the webhook
    trigger in its record, and a workload's runs act in the order accepted. An action not listed
    (rollback) is left Scheduled for a runner. The receiver's worker processes are SIGKILLed first:
    the requests still act, on new ones."""
    import os
    import signal

    from prefect.client.orchestration import get_client

    from tests.support.webhook_env import read_run, register_deployments

    name = swarm_workload
    token = "inline-ops-token-" + name
    suffix = "inline-test"  # no runner serves these: only the receiver can execute their runs
    register_deployments(suffix)
    config = parse_config({"deployment_suffix": suffix, "run_inline": ["scale", "scale-out"], "inline_runs": 2,
                           "callers": [{"name": "ops", "token_env": "UNUSED", "allow_workloads": ["wh-*"]}]})
    app = create_app(config, {"ops": Credentials.model_validate({"token": token})}, workloads=workloads_dir)
    receiver = UvicornThread(app).start()
    try:
        workers = app.state.receiver.workers
        killed = wait_for(lambda: workers.pids() if len(workers.pids()) == 2 else None,
                          "the receiver's two worker processes to start")
        for pid in killed:
            os.kill(pid, signal.SIGKILL)
        sent = []
        for body in ({"action": "scale", "replicas": 3}, {"action": "scale-out", "by": 1},
                     {"action": "rollback"}):
            resp = httpx.post(f"{receiver.url}/v1/actions", json={"workload": name, **body}, timeout=60,
                              headers={"Authorization": f"Bearer {token}"})
            assert resp.status_code == 202, resp.text
            sent.append(resp.json())
        assert [out.get("executes") for out in sent] == ["inline", "inline", None]
        ids = [out["flow_run_id"] for out in sent]

        def both_final() -> bool:
            return all(read_run(i).state is not None and read_run(i).state.is_final() for i in ids[:2])

        wait_for(both_final, "the two inline runs to end")
        assert replicas(name) == 4  # scale to 3, then scale-out by 1: in the order accepted
        with get_client(sync_client=True) as client:
            runs = [client.read_flow_run(i) for i in ids]
            deployments = {r.deployment_id: client.read_deployment(r.deployment_id).name for r in runs}
        assert [r.state.type.value for r in runs] == ["COMPLETED", "COMPLETED", "SCHEDULED"]
        assert all(deployments[r.deployment_id] == suffix for r in runs)
        records = {str(e.record.flow_run_id): e.record for e in history.fetch(name)
                   if e.record.trigger.kind == "webhook"}
        assert set(records) == set(ids[:2])
        assert records[ids[0]].after.replicas == 3 and records[ids[1]].after.replicas == 4
        assert not set(killed) & set(workers.pids())  # executed by new worker processes
        first_done = records[ids[0]].finished_at
        assert first_done is not None and first_done <= records[ids[1]].started_at
        assert all(r.outcome == "succeeded" for r in records.values())
    finally:
        receiver.stop()
