"""Reaction latency of the three autoscaler paths, and one tick over 1,000 workloads.

Usage: .venv/bin/python bench/reaction_latency.py [--breaches 10] [--paths threshold,fast,scheduled]
       [--fast-interval 2] [--watch-interval 1] [--schedule-interval 15] [--workloads 1000]
       [--databases postgres,sqlite]

For each database in turn (side by side): starts its own Prefect server, a real Prometheus (1s scrape)
over a controllable exporter and a Swarm service; for each path, ``--breaches`` times: the load goes from
0.5 to 40 (target 10 per replica -> 4 replicas); latency = the service's ``UpdatedAt`` (Swarm's own time
of the accepted scale write) minus the moment the new value was first visible in a Prometheus query (polled every 20ms).
Between breaches the service is reset to 1 replica and its policy state deleted.

(a) threshold: ``scalewise watch`` logic (in a thread) -> scalewise.threshold.crossed event ->
    the deployment trigger -> a run of the served ``autoscale`` deployment (serve.py, poll 1s);
(b) fast: ``run_loop`` (``scalewise autoscaler``) in process, one flow call per tick;
(c) scheduled: the served deployment's interval schedule.

Then one evaluation tick over ``--workloads`` synthetic workloads through
:func:`scalewise.autoscaler.evaluate_workload` (the evaluation service) with an in-memory metric source
(wall and CPU time).
Prints JSON. Bounded: every wait has a deadline.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import loadavg, start_local_server, tear_down, use_api  # noqa: E402

QUERY = 'sum(scalewise_test_load{workload="{workload}"})'
LOW, HIGH = 0.5, 40.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spec_doc(name: str) -> dict[str, Any]:
    return {
        "name": name, "target": "swarm", "image": "scalewise/busybox:1",
        "healthcheck": {"command": "wget -q -O /dev/null http://127.0.0.1:8080/ || exit 1", "interval": "1s",
                        "timeout": "1s", "retries": 2},
        "replicas": {"min": 1, "max": 5, "initial": 1}, "stop_grace_period": "1s",
        "autoscaling": {
            "metrics": [{"name": "load", "query": QUERY, "type": "average_value", "target": 10}],
            "tolerance": 0.1,
            "behavior": {
                "scale_up": {"stabilization_window": 0, "policies": [{"type": "pods", "value": 10, "period": 1}]},
                "scale_down": {"stabilization_window": 1, "policies": [{"type": "percent", "value": 100, "period": 1}]},
            },
        },
    }


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def stats(values: list[float]) -> dict[str, Any]:
    return {
        "n": len(values), "p50_s": round(pct(values, 0.5), 3), "p95_s": round(pct(values, 0.95), 3),
        "min_s": round(min(values), 3) if values else None, "max_s": round(max(values), 3) if values else None,
        "samples_s": [round(v, 3) for v in values],
    }


class Rig:
    def __init__(self, name: str, prom: Any) -> None:
        import docker

        self.name = name
        self.prom = prom
        self.docker = docker.from_env()
        self.timeouts = 0

    def service(self) -> Any:
        return self.docker.services.get(self.name)

    def replicas(self) -> int:
        return int(self.service().attrs["Spec"]["Mode"]["Replicated"]["Replicas"])

    def updated_at(self) -> datetime:
        raw = self.service().attrs["UpdatedAt"]  # RFC 3339 with nanoseconds
        head, _, frac = raw.rstrip("Z").partition(".")
        return datetime.fromisoformat(head).replace(tzinfo=UTC) + timedelta(microseconds=int((frac + "000000")[:6]))

    def visible(self, value: float, timeout_s: float = 20.0) -> datetime:
        promql = QUERY.replace("{workload}", self.name)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            seen = datetime.now(UTC)
            result = self.prom.query(promql)
            if len(result) == 1 and float(result[0]["value"][1]) == value:
                return seen
            time.sleep(0.02)
        raise TimeoutError(f"{promql} never showed {value}")

    def reset(self) -> None:
        """Back to 1 replica at low load, with a fresh policy state."""
        from scalewise import orchestrators
        from scalewise.settings import workloads_path
        from scalewise.spec import get_workload
        from tasks.policy_state import delete_state

        self.prom.exporter.set(self.name, LOW)
        self.visible(LOW)
        spec = get_workload(workloads_path(), self.name)
        orch = orchestrators.for_target("swarm")
        for _ in range(5):
            st = orch.read(spec)
            if st.desired_replicas == 1:
                break
            try:
                orch.set_replicas(spec, 1, st.version)
            except Exception:
                time.sleep(0.2)
        delete_state(self.name)
        time.sleep(1.5)  # past the 1s scale-down window and rate periods

    def breach(self, timeout_s: float) -> float:
        """Raise the load; seconds from 'visible in Prometheus' to 'scale write accepted'."""
        self.prom.exporter.set(self.name, HIGH)
        t_visible = self.visible(HIGH)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.replicas() >= 4:
                return (self.updated_at() - t_visible).total_seconds()
            time.sleep(0.02)
        raise TimeoutError(f"no scale-out within {timeout_s}s")


def run_path(rig: Rig, breaches: int, timeout_s: float, before: Callable[[], None], after: Callable[[], None],
             jitter_s: float) -> list[float]:
    """Latencies of the breaches that scaled out within ``timeout_s``; the others are counted in
    ``rig.timeouts`` (reported beside the percentiles, never dropped silently)."""
    samples: list[float] = []
    rig.timeouts = 0
    for _ in range(breaches):
        rig.reset()
        before()
        time.sleep(random.uniform(0, jitter_s))  # a random phase against the tick / poll
        try:
            samples.append(rig.breach(timeout_s))
        except TimeoutError:
            rig.timeouts += 1
        finally:
            after()
    return samples


def tick_1000(n: int) -> dict[str, Any]:
    from scalewise import autoscaler
    from scalewise.metrics.base import MetricReading, WorkloadRef
    from scalewise.model import WorkloadState
    from scalewise.policy.config import MetricTarget
    from scalewise.spec import WorkloadSpec

    rng = random.Random(7)
    values: dict[str, dict[str, float]] = {}

    class InMemoryCpu:
        kind = "docker_cpu"

        def read(self, metric: MetricTarget, workload: WorkloadRef) -> MetricReading:
            return MetricReading.per_replica(metric.name, datetime.now(UTC), values[workload.name])

    specs, states = [], {}
    for i in range(n):
        name = f"w{i:04d}"
        specs.append(WorkloadSpec.model_validate({
            "name": name, "target": "docker", "image": "scalewise/busybox:1",
            "replicas": {"min": 1, "max": 20, "initial": 2},
            "autoscaling": {"metrics": [{"name": "cpu", "source": "docker_cpu", "type": "utilization", "target": 60}]},
        }))
        r = rng.randint(1, 10)
        states[name] = WorkloadState(name=name, target="docker", desired_replicas=r, ready_replicas=r,
                                     image="scalewise/busybox:1", version="v1")
        values[name] = {f"{name}-{k}": rng.uniform(5, 150) for k in range(r)}
    source = {"docker_cpu": InMemoryCpu()}
    out: dict[str, Any] = {"workloads": n}
    policy: dict[str, Any] = {}
    reads = autoscaler.Reads.plain(lambda s: states[s.name], policy.get, found=lambda: source)
    for label in ("cold_tick", "warm_tick"):
        wall0, cpu0 = time.perf_counter(), time.process_time()
        changed = 0
        for spec in specs:
            ev = autoscaler.evaluate_workload(spec, reads)
            assert isinstance(ev, autoscaler.Evaluation)
            policy[spec.name] = ev.decision.state
            changed += ev.decision.changed
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        out[label] = {"wall_s": round(wall, 4), "cpu_s": round(cpu, 4), "per_workload_us": round(wall / n * 1e6, 1),
                      "changed": changed}
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--breaches", type=int, default=10)
    parser.add_argument("--paths", default="threshold,fast,scheduled")
    parser.add_argument("--fast-interval", type=float, default=2.0)
    parser.add_argument("--watch-interval", type=float, default=1.0)
    parser.add_argument("--schedule-interval", type=float, default=15.0)
    parser.add_argument("--workloads", type=int, default=1000)
    parser.add_argument("--databases", default="postgres,sqlite", help="one Prefect server on each, in turn")
    args = parser.parse_args()
    paths = [p for p in args.paths.split(",") if p]
    result: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "intervals": {
            "prometheus_scrape_s": 1.0, "visibility_poll_s": 0.02, "watcher_s": args.watch_interval,
            "serve_poll_s": 1.0, "fast_loop_s": args.fast_interval, "schedule_s": args.schedule_interval,
        },
        "breach": f"load {LOW} -> {HIGH} (target 10/replica): 1 -> 4 replicas",
        "latency": "Swarm UpdatedAt of the scale write - first time the value was visible in a Prometheus query",
    }
    if paths:
        subprocess.run(["bash", str(ROOT / "scripts" / "start-docker.sh")], check=True, capture_output=True)
        for database in [d.strip() for d in args.databases.split(",") if d.strip()]:
            before = loadavg()
            result[database] = {"load_avg_before": before, "paths": run_paths(args, paths, database),
                                "load_avg_after": loadavg()}
    result["tick_1000"] = tick_1000(args.workloads)
    print(json.dumps(result, indent=2))


def run_paths(args: argparse.Namespace, paths: list[str], database: str) -> dict[str, Any]:
    home = Path(tempfile.mkdtemp(prefix=f"bench-react-{database}-"))
    server = start_local_server(home / "prefect", database)
    # every thread (watcher, loop) reads the global settings: point them at this server
    use_api(server.api_url)
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from tests.support.prefect_env import Served
    from tests.support.prom_env import start_prometheus
    wdir = home / "workloads"
    wdir.mkdir()
    os.environ["SCALEWISE_WORKLOADS"] = str(wdir)
    out: dict[str, Any] = {}
    name = f"react-{uuid.uuid4().hex[:6]}"
    (wdir / f"{name}.yaml").write_text(yaml.safe_dump(spec_doc(name)))

    try:
        with start_prometheus() as prom, temporary_settings(updates={PREFECT_API_URL: server.api_url}):
            os.environ["SCALEWISE_PROMETHEUS_URL"] = prom.url
            from flows.deploy import deploy
            from scalewise.audit import Trigger

            rig = Rig(name, prom)
            prom.exporter.set(name, LOW)
            rig.visible(LOW)
            deploy(workload=name, trigger=Trigger(kind="api", actor="bench"))
            if "threshold" in paths:
                out["threshold"] = bench_threshold(rig, args, server.api_url, wdir, home, Served)
            if "fast" in paths:
                out["fast"] = bench_fast(rig, args)
            if "scheduled" in paths:
                out["scheduled"] = bench_scheduled(rig, args, server.api_url, wdir, home, Served)
    finally:
        tear_down(server, name)
    return out


def bench_threshold(rig: Rig, args: argparse.Namespace, api: str, wdir: Path, home: Path, served: Any) -> Any:
    from scalewise.spec import load_workloads
    from scalewise.watcher import Watcher, prefect_emitter

    os.environ["SCALEWISE_AUTOSCALE_INTERVAL"] = "off"
    srv = served(api, wdir, home / "serve-threshold.log")
    try:
        srv.wait_registered(["autoscale/scalewise"])
        emit = prefect_emitter()
        emitted: list[datetime] = []

        def timed_emit(crossing: Any) -> None:
            emitted.append(datetime.now(UTC))
            emit(crossing)

        watcher = Watcher(lambda: load_workloads(wdir), timed_emit, workloads=[rig.name])
        active = threading.Event()
        stop = threading.Event()

        def loop() -> None:
            while not stop.is_set():
                if active.is_set():
                    watcher.tick()
                stop.wait(args.watch_interval)

        thread = threading.Thread(target=loop, daemon=True)
        thread.start()

        def before() -> None:
            watcher.tick()  # re-arm at low load
            active.set()

        try:
            samples = run_path(rig, args.breaches, 60, before, active.clear, args.watch_interval)
        finally:
            stop.set()
            thread.join(10)
        return {**stats(samples), "timeouts": rig.timeouts, "events": watcher.emitted, "stages": stages(emitted)}
    finally:
        srv.stop()
        os.environ.pop("SCALEWISE_AUTOSCALE_INTERVAL", None)


def stages(emitted: list[datetime]) -> dict[str, Any]:
    """Per triggered run: event emitted -> run created (automation) -> run started (serve poll + spawn)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        dep = client.read_deployment_by_name("autoscale/scalewise")
        from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

        runs = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[dep.id])))
    created, started = [], []
    runs = sorted(runs, key=lambda r: r.created or datetime.min.replace(tzinfo=UTC))
    for t in emitted:
        after = [r for r in runs if r.created and r.created >= t]
        if after:
            r = after[0]
            assert r.created is not None
            created.append((r.created - t).total_seconds())
            if r.start_time is not None:
                started.append((r.start_time - r.created).total_seconds())
    return {"event_to_run_created": stats(created), "run_created_to_started": stats(started)}


def bench_fast(rig: Rig, args: argparse.Namespace) -> Any:
    from flows.autoscale_loop import run_loop
    from scalewise import selfmetrics

    box: dict[str, Any] = {}

    def before() -> None:
        stop = threading.Event()
        thread = threading.Thread(
            target=run_loop, args=(args.fast_interval, [rig.name]), kwargs={"stop": stop}, daemon=True
        )
        thread.start()
        box["stop"], box["thread"] = stop, thread

    def after() -> None:
        box["stop"].set()
        box["thread"].join(30)

    c0 = selfmetrics.TICK_SECONDS._sum.get(), sum(b.get() for b in selfmetrics.TICK_SECONDS._buckets)
    samples = run_path(rig, args.breaches, 60, before, after, args.fast_interval)
    c1 = selfmetrics.TICK_SECONDS._sum.get(), sum(b.get() for b in selfmetrics.TICK_SECONDS._buckets)
    ticks = c1[1] - c0[1]
    return {**stats(samples), "timeouts": rig.timeouts, "ticks": int(ticks),
            "mean_tick_s": round((c1[0] - c0[0]) / ticks, 3) if ticks else None}


def bench_scheduled(rig: Rig, args: argparse.Namespace, api: str, wdir: Path, home: Path, served: Any) -> Any:
    os.environ["SCALEWISE_AUTOSCALE_INTERVAL"] = f"{args.schedule_interval:g}"
    srv = served(api, wdir, home / "serve-scheduled.log")
    try:
        srv.wait_registered(["autoscale/scalewise"])
        samples = run_path(rig, args.breaches, args.schedule_interval * 3 + 60, lambda: None, lambda: None,
                           args.schedule_interval)
        return {**stats(samples), "timeouts": rig.timeouts}
    finally:
        srv.stop()
        os.environ.pop("SCALEWISE_AUTOSCALE_INTERVAL", None)


if __name__ == "__main__":
    main()
